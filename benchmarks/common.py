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
            "machine": platform.machine(), "cpu": cpu_model(), "date": time.strftime("%Y-%m-%d")}


def cpu_model() -> str:
    """The host CPU as /proc/cpuinfo names it. Timings from different hosts do not compare: the
    runners benchmark's eager-torch head-only MiniLM step took 122-148 ms on 2026-11-23 and
    221-279 ms on a 2-vCPU AMD EPYC host on 2026-12-06, while ONNX Runtime's took 137-156 and
    134-146 ms; so every result records the CPU, and only ratios within one run are compared."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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
