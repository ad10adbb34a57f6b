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
