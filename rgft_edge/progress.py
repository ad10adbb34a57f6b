"""A rich progress bar showing step, loss, active components and step time."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class StepProgress:
    def __init__(self, total: int | None, num_components: int, enabled: bool = True):
        self.k = num_components
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]RGFT"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("active {task.fields[active]}"),
            TextColumn("{task.fields[dt]}/step"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, disable=not enabled, refresh_per_second=4,
            transient=not sys.stderr.isatty())
        self.task = self.progress.add_task("train", total=total, loss="-", active="-", dt="-")

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def update(self, record: dict) -> None:
        self.progress.update(self.task, advance=1, loss=f"{record['loss']:.4f}",
                             active=f"{len(record['selected'])}/{self.k}",
                             dt=f"{record['step_time_s'] * 1000:.0f}ms")
