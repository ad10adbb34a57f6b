"""Device profiles as YAML data files (read by rgft_edge.profiles)."""
