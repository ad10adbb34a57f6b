"""rgft-edge: Residual-Guided Fine-Tuning for edge devices."""

__version__ = "0.1.0"
