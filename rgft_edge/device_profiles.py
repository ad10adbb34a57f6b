"""Device profiles: load, validate (naming the bad field), list, and detect the current machine."""

from __future__ import annotations

import importlib.resources
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import yaml

from .backend import backend_names
from .budgets.units import parse_bytes
from .errors import UserError
from .meters.power import sensor_names
from .policies import check_option_values, option_fields, policy_names



class ProfileError(UserError):
    """A profile file that is missing or malformed."""


@dataclass
class Profile:
    name: str
    description: str
    ram_gb: float
    usable_memory_gb: float
    cores: int
    default_threads: int
    idle_power_w: float
    max_power_w: float
    sensor_kind: str
    sensor_location: str | None
    preferred_backend: str
    defaults: dict
    match: dict
    source: str


_FIELDS = {"name": str, "description": str, "ram_gb": (int, float), "usable_memory_gb": (int, float),
           "cores": int, "default_threads": int, "idle_power_w": (int, float),
           "max_power_w": (int, float), "power_sensor": dict, "preferred_backend": str,
           "defaults": dict, "match": dict}


def _profile_dir() -> Path:
    return Path(str(importlib.resources.files("rgft_edge.profiles")))


def list_profiles() -> list[str]:
    return sorted(p.stem for p in _profile_dir().glob("*.yaml"))


def load_profile(name_or_path: str) -> Profile:
    path = Path(name_or_path)
    if not path.suffix:
        path = _profile_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ProfileError(f"unknown profile {name_or_path!r}; known: {', '.join(list_profiles())}")
    if not path.is_file():
        raise ProfileError(f"profile file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ProfileError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: a profile is a mapping of fields")
    for field, types in _FIELDS.items():
        if field not in raw:
            raise ProfileError(f"{path}: missing field {field!r}")
        if not isinstance(raw[field], types) or isinstance(raw[field], bool):
            raise ProfileError(f"{path}: field {field!r} has the wrong type ({type(raw[field]).__name__})")
    for field in ("ram_gb", "usable_memory_gb", "cores", "default_threads", "max_power_w"):
        if raw[field] <= 0:
            raise ProfileError(f"{path}: field {field!r} must be positive, got {raw[field]}")
    if raw["idle_power_w"] < 0 or raw["idle_power_w"] > raw["max_power_w"]:
        raise ProfileError(f"{path}: field 'idle_power_w' must be in [0, max_power_w]")
    if raw["usable_memory_gb"] > raw["ram_gb"]:
        raise ProfileError(f"{path}: field 'usable_memory_gb' exceeds 'ram_gb'")
    sensor = raw["power_sensor"]
    sensors = ("none",) + sensor_names()
    if sensor.get("kind") not in sensors:
        raise ProfileError(f"{path}: field 'power_sensor.kind' must be one of {sensors}")
    if raw["preferred_backend"] not in backend_names():
        raise ProfileError(f"{path}: field 'preferred_backend' must be one of {backend_names()}")
    defaults = raw["defaults"]
    if "policy" in defaults and defaults["policy"] not in policy_names():
        raise ProfileError(f"{path}: field 'defaults.policy' must be one of {policy_names()}")
    try:
        check_option_values({k: v for k, v in defaults.items() if k in option_fields()})
    except ValueError as e:
        raise ProfileError(f"{path}: field 'defaults': {e}") from e
    for key in ("memory_budget",):
        if key in raw["defaults"]:
            try:
                parse_bytes(raw["defaults"][key])
            except UserError as e:
                raise ProfileError(f"{path}: field 'defaults.{key}': {e}") from e
    return Profile(raw["name"], raw["description"], float(raw["ram_gb"]), float(raw["usable_memory_gb"]),
                   raw["cores"], raw["default_threads"], float(raw["idle_power_w"]),
                   float(raw["max_power_w"]), sensor["kind"], sensor.get("location"),
                   raw["preferred_backend"], raw["defaults"], raw["match"], str(path))


def _read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel.lstrip("/")).read_bytes().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


def detect(root: str | os.PathLike = "/", machine: str | None = None) -> tuple[Profile, str]:
    """(profile, reason). `root` lets tests point at a fake filesystem."""
    root = Path(root)
    model = _read(root, "proc/device-tree/model") or _read(root, "sys/firmware/devicetree/base/model") or ""
    tegra = _read(root, "etc/nv_tegra_release")
    compat = _read(root, "proc/device-tree/compatible") or ""
    if tegra is not None or "nvidia,tegra" in compat or "Jetson" in model:
        name = "jetson-orin-nano" if ("t234" in compat or "Orin" in model) else "jetson-nano"
        return load_profile(name), f"Jetson: device-tree model {model!r}, tegra release {'present' if tegra else 'absent'}"
    if "Raspberry Pi 5" in model:
        return load_profile("raspberry-pi-5"), f"device-tree model {model!r}"
    if "Raspberry Pi 4" in model:
        return load_profile("raspberry-pi-4"), f"device-tree model {model!r}"
    if (root / "system/build.prop").is_file() or os.environ.get("ANDROID_ROOT"):
        return load_profile("android-phone"), "Android (system/build.prop or ANDROID_ROOT)"
    arch = machine or platform.machine()
    if arch in ("x86_64", "AMD64", "i686"):
        return load_profile("laptop-x86"), f"{arch} CPU, no board-specific device tree"
    raise ProfileError(f"no profile fits this machine (arch {arch!r}, device-tree model {model!r}); "
                       "pass --profile NAME or a YAML file")


def power_profile(name_or_path: str | None) -> Profile:
    """The profile that prices power when no sensor exists: the one given, else the detected
    board, else a laptop."""
    if name_or_path:
        return load_profile(name_or_path)
    try:
        return detect()[0]
    except ProfileError:
        return load_profile("laptop-x86")
