"""Does a device extra's whole dependency closure resolve for linux aarch64 (Raspberry Pi OS
bookworm: Python 3.11, glibc 2.36; JetPack 6: Python 3.10, glibc 2.35)?

    .venv/bin/python scripts/check_device_install.py [--extra device-onnx] [--out FILE.json]
    .venv/bin/python scripts/check_device_install.py --extra device-executorch --python 3.11 --wheelhouse DIR

Runs `pip download --only-binary=:all:` for the project's core dependencies plus the extra, per
Python version, for the manylinux aarch64 tags those boards accept (no sdists: a board should not
compile anything), and reports every wheel it would install. Needs the package registry.

Host pip evaluates environment markers for the host, not the target (`--platform` changes only
the wheel tags), which matters where a package's own dependencies are marked by architecture:
torch's CUDA packages are `platform_machine == "x86_64"`, executorch's coremltools likewise. So
the extra's own markers, and the dependency lists of the packages in `--expand` (default: torch,
executorch), are evaluated here for the board; deeper dependencies (pure-Python ones in
practice) are left to pip. `--wheelhouse DIR` keeps the wheels (scripts/emulate_aarch64.sh
installs them into an emulated arm64 userland).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

try:
    from packaging.requirements import Requirement
except ImportError:  # a bare system Python: pip's vendored copy
    from pip._vendor.packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
PYTHONS = {"3.11": "Raspberry Pi 5, Raspberry Pi OS bookworm", "3.10": "Jetson Orin Nano, JetPack 6"}
# Downloaded without their dependencies, whose lists are evaluated here for the board: torch (host
# pip would evaluate its CUDA markers for x86_64), and what depends on torch unpinned (peft,
# accelerate: left to pip, they pulled a second, old torch 2.1.0 beside the pinned 2.10.0)
EXPAND = ("torch", "peft", "accelerate")
# Installed beside an extra with --no-deps (docs/artifacts.md#device-installs): executorch's
# declared dependencies serve its exporter, not the runtime binding a device imports.
NO_DEPS = {"device-executorch": ["executorch==1.5.1"]}


def requirements(extra: str) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"]) + _extra(project, extra)


def _extra(project: dict, extra: str) -> list[str]:
    """An extra's requirements, with `rgft-edge[other]` (an extra built on another) expanded."""
    out = []
    for r in project["optional-dependencies"][extra]:
        req = Requirement(r)
        if req.name == project["name"]:
            for e in sorted(req.extras):
                out += [x for x in _extra(project, e) if x not in out]
        elif r not in out:
            out.append(r)
    return out


def for_board(reqs: list[str], python: str) -> list[str]:
    """The requirements that apply on linux aarch64 under `python` (no extras), markers dropped."""
    env = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "aarch64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
    kept = []
    for line in reqs:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            req.marker = None
            kept.append(str(req))
    return kept


def _wheel_requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    return [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Requires-Dist:")]


def download(reqs: list[str], python: str, dest: Path, no_deps: list[str] = (),
             expand: tuple[str, ...] = EXPAND) -> dict:
    """Download the board's closure of `reqs` (plus `no_deps`, without their dependencies) into
    `dest`; {"resolves", "wheels", "errors"}."""
    base = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", python,
            "-d", str(dest), *[a for p in PLATFORMS for a in ("--platform", p)]]
    reqs = for_board(reqs, python)
    alone = [r for r in reqs if Requirement(r).name in expand]
    known = {Requirement(r).name for r in reqs}
    runs, extra, todo = [], [], list(alone)
    if no_deps:
        runs.append(subprocess.run(base + ["--no-deps", *no_deps], capture_output=True, text=True))
    while todo:  # `expand`'s packages without their dependencies, their dependency lists evaluated here
        runs.append(subprocess.run(base + ["--no-deps", *todo], capture_output=True, text=True))
        batch, todo = todo, []
        for r in batch:
            name = Requirement(r).name.replace("-", "_")
            for wheel in dest.glob(f"{name}-*.whl"):
                for dep in for_board(_wheel_requires(wheel), python):
                    n = Requirement(dep).name
                    if n in known:  # pinned by the project already (e.g. peft's bare `torch`)
                        continue
                    known.add(n)
                    (todo if n in expand else extra).append(dep)
    rest = [r for r in reqs if r not in alone] + extra
    runs.append(subprocess.run(base + rest, capture_output=True, text=True))
    errors = [line for res in runs for line in res.stderr.splitlines() if line.startswith("ERROR")]
    return {"resolves": all(r.returncode == 0 for r in runs),
            "wheels": sorted(p.name for p in dest.glob("*.whl")), "errors": errors}


def check(extra: str, python: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        return {"python": python, "board": PYTHONS[python],
                **download(requirements(extra), python, Path(d), NO_DEPS.get(extra, []))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--extra", default="device-onnx")
    ap.add_argument("--out", default=None)
    ap.add_argument("--python", choices=list(PYTHONS), default=None, help="one Python version only")
    ap.add_argument("--wheelhouse", default=None, help="keep the wheels here (needs --python)")
    args = ap.parse_args()
    if args.wheelhouse:
        if not args.python:
            ap.error("--wheelhouse needs --python")
        dest = Path(args.wheelhouse)
        dest.mkdir(parents=True, exist_ok=True)
        res = download(requirements(args.extra), args.python, dest, NO_DEPS.get(args.extra, []))
        print("\n".join(res["errors"]) or f"{len(res['wheels'])} wheels in {dest}")
        sys.exit(0 if res["resolves"] else 1)
    pythons = [args.python] if args.python else list(PYTHONS)
    out = {"extra": args.extra, "requirements": requirements(args.extra),
           "without_dependencies": NO_DEPS.get(args.extra, []), "expanded_here": list(EXPAND),
           "platforms": list(PLATFORMS), "date": time.strftime("%Y-%m-%d"),
           "results": [check(args.extra, py) for py in pythons]}
    for r in out["results"]:
        print(f"{args.extra} on aarch64 / Python {r['python']} ({r['board']}): "
              f"{'resolves' if r['resolves'] else 'FAILS'}, {len(r['wheels'])} wheels")
        for line in r["errors"]:
            print("  " + line)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    sys.exit(0 if all(r["resolves"] for r in out["results"]) else 1)


if __name__ == "__main__":
    main()
