"""The drift task: a training stream whose distribution changes mid-run.

`--drift-labels sport,tech` splits the training data by label: the stream first draws batches
only from the other labels (phase 1), then, once the run is `--drift-at` of the way through (of
`--max-train-seconds` on the training clock when set, else of the steps), only from the drift
labels (phase 2). Validation and test keep only the drift labels, so every evaluation measures the
*new* distribution: a selection frozen during phase 1 should go stale here, a live map should not.
The step at which the stream switched is kept in checkpoints, so a resumed run replays the same
batches.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from .data import TextDataset
from .errors import UserError
from .text import TextEncoder, batches

PASSES = 1000  # each phase cycles through its data; the run stops long before


def drift_label_ids(spec: str, label_names: list[str]) -> list[int]:
    """Label indices from 'sport,tech' (names) or '3,4' (indices)."""
    ids = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        if part in label_names:
            ids.append(label_names.index(part))
        elif part.isdigit() and int(part) < len(label_names):
            ids.append(int(part))
        else:
            raise UserError(f"--drift-labels: {part!r} is not one of the labels {label_names}")
    if not ids or len(set(ids)) == len(label_names):
        raise UserError(f"--drift-labels must name some but not all of the labels {label_names}")
    return sorted(set(ids))


def keep_labels(ds: TextDataset, ids: list[int], keep: bool = True) -> TextDataset:
    idx = [i for i, y in enumerate(ds.labels) if (y in ids) == keep]
    if not idx:
        raise UserError(f"{ds.source}: no examples {'with' if keep else 'without'} the drift labels "
                        f"{[ds.label_names[i] for i in ids]} in this split")
    return ds.subset(idx)


class PhasedStream:
    """Batches from `old` until `switched(step)` says the drift has come, then from `new`."""

    def __init__(self, encoder: TextEncoder, old: TextDataset, new: TextDataset, batch_size: int, seed: int,
                 switched: Callable[[int], bool], drop_last: bool = False, drift_step: int | None = None):
        self.encoder, self.old, self.new, self.batch_size, self.seed = encoder, old, new, batch_size, seed
        self.switched, self.drop_last = switched, drop_last
        self.drift_step = drift_step  # first step of phase 2 once known (restored on resume)

    def _phase(self, ds: TextDataset, seed: int) -> Iterator[dict]:
        return batches(self.encoder, ds.texts, ds.labels, self.batch_size, seed, PASSES, self.drop_last)

    def __iter__(self) -> Iterator[dict]:
        old, new = self._phase(self.old, self.seed), self._phase(self.new, self.seed + 7919)
        step = 0
        while True:
            if self.drift_step is None and self.switched(step):
                self.drift_step = step
            yield next(new if self.drift_step is not None and step >= self.drift_step else old)
            step += 1


def phase_sizes(ds: TextDataset, ids: list[int]) -> dict:
    labels = np.asarray(ds.labels)
    return {"phase1": int((~np.isin(labels, ids)).sum()), "phase2": int(np.isin(labels, ids).sum())}
