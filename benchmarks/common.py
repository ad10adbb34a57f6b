"""Shared by the benchmarks: the environment record and writing JSON + markdown side by side."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Callable


def environment(**extra) -> dict:
    import torch

    return {**extra, "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "date": time.strftime("%Y-%m-%d")}


def write_results(out: str | Path, name: str, meta: dict, rows: list[dict],
                  markdown: Callable[[dict, list[dict]], str]) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    text = markdown(meta, rows)
    (out / f"{name}.md").write_text(text)
    print(text)


def run_child(argv: list[str], timeout: float | None = None, env: dict | None = None) -> dict:
    """Run one benchmark child process; its result is the JSON on its last `RESULT ` line.

    One process per run keeps peak RSS and allocator state that run's alone."""
    import subprocess

    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if line:
        return json.loads(line[-1][len("RESULT "):])
    return {"error": (proc.stderr or proc.stdout)[-800:] or f"exit status {proc.returncode}"}
