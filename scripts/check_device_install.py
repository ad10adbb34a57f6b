"""Does a device extra's whole dependency closure resolve for linux aarch64 (Raspberry Pi OS
bookworm: Python 3.11, glibc 2.36; JetPack 6: Python 3.10, glibc 2.35)?

    .venv/bin/python scripts/check_device_install.py [--extra device-onnx] [--out FILE.json]

Runs `pip download --only-binary=:all:` for the project's core dependencies plus the extra, per
Python version, for the manylinux aarch64 tags those boards accept (no sdists: a board should not
compile anything), and reports every wheel it would install. Needs the package registry.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
PYTHONS = {"3.11": "Raspberry Pi 5, Raspberry Pi OS bookworm", "3.10": "Jetson Orin Nano, JetPack 6"}


def requirements(extra: str) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"]) + list(project["optional-dependencies"][extra])


def for_board(reqs: list[str], python: str) -> list[str]:
    """The requirements that apply on linux aarch64 under `python`, markers dropped: pip
    download evaluates environment markers against the interpreter running it, not the target."""
    from packaging.requirements import Requirement

    env = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "aarch64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    kept = []
    for line in reqs:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            req.marker = None
            kept.append(str(req))
    return kept


def check(extra: str, python: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        argv = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", python,
                "-d", d, *[a for p in PLATFORMS for a in ("--platform", p)],
                *for_board(requirements(extra), python)]
        res = subprocess.run(argv, capture_output=True, text=True)
        wheels = sorted(p.name for p in Path(d).glob("*.whl"))
    errors = [line for line in res.stderr.splitlines() if line.startswith("ERROR")]
    return {"python": python, "board": PYTHONS[python], "resolves": res.returncode == 0,
            "wheels": wheels, "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--extra", default="device-onnx")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = {"extra": args.extra, "requirements": requirements(args.extra), "platforms": list(PLATFORMS),
           "date": time.strftime("%Y-%m-%d"), "results": [check(args.extra, py) for py in PYTHONS]}
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
