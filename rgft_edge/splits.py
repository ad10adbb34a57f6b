"""The data a run uses, as the config asks: training, held-out test, and validation splits.

The held-out set comes out of `--data` (a seeded split; the same set with or without a validation
split), or from a separate file (`--eval-data`, the user's own test set, labels matched by name).
The drift task (`--drift-labels`) keeps only the drift labels in validation and test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import FinetuneConfig
from .data import BUILTIN, TextDataset, load_dataset, split
from .drift import drift_label_ids, keep_labels
from .errors import DataError, UserError

SKIP_WARNING = 0.05  # skipping more than this share of a file's rows is worth a warning
from .images import is_image_source, load_images


@dataclass
class Splits:
    full: TextDataset
    train: TextDataset
    held_out: TextDataset  # the test set: evaluated at the end (and during training without validation)
    validation: TextDataset | None = None  # evaluations during training, when asked for


def _load(cfg: FinetuneConfig, source: str, labels: list[str] | None) -> TextDataset:
    d = cfg.data
    if is_image_source(source):
        return load_images(source, labels, d.on_bad_row)
    if source in BUILTIN:
        return load_dataset(source)
    return load_dataset(source, text_column=d.text_column, label_column=d.label_column,
                        on_bad_row=d.on_bad_row, labels=labels, encoding=d.encoding)


def load_splits(cfg: FinetuneConfig, labels: list[str] | None = None) -> Splits:
    """The dataset and its train / held-out (/ validation) splits as the config asks."""
    d = cfg.data
    data = _load(cfg, d.source, labels)
    if labels is not None and data.label_names != labels:
        raise UserError(f"{d.source}: labels {data.label_names} do not match the model's {labels}")
    if d.eval_data:
        parts = _with_eval_file(cfg, data)
    else:
        eval_n = min(d.eval_examples, max(1, len(data) // 5))
        parts = split(data, eval_n, cfg.training.seed, d.max_train_examples, validation=d.validation_examples)
    if d.drift_labels:  # evaluations measure the new distribution only
        ids = drift_label_ids(d.drift_labels, data.label_names)
        parts = (parts[0],) + tuple(keep_labels(p, ids) for p in parts[1:])
    return Splits(data, *parts)


def _with_eval_file(cfg: FinetuneConfig, data: TextDataset) -> tuple:
    """(train, test[, validation]) with the test set read from `--eval-data`: every row of `--data`
    trains (less a validation split), and the eval file's labels must be the training labels."""
    d = cfg.data
    test = _load(cfg, d.eval_data, data.label_names)
    if test.label_names != data.label_names:
        raise UserError(f"{d.eval_data}: labels {test.label_names} do not match the training data's "
                        f"{data.label_names}")
    rng = np.random.default_rng(cfg.training.seed)
    test = test.subset(rng.permutation(len(test))[: d.eval_examples].tolist())
    order = rng.permutation(len(data))
    val, train = order[: d.validation_examples], order[d.validation_examples:]
    if len(train) == 0:
        raise DataError(f"{len(data)} examples leave nothing to train on after {d.validation_examples} "
                        "for validation")
    if d.max_train_examples:
        train = train[: d.max_train_examples]
    parts = (data.subset(train.tolist()), test)
    return parts + ((data.subset(val.tolist()),) if d.validation_examples else ())


def _file_lines(ds: TextDataset, what: str) -> list[str]:
    notes = ds.notes
    if "rows_read" not in notes:  # a shipped dataset or images
        extra = f", {ds.skipped_rows:,} skipped" if ds.skipped_rows else ""
        return [f"{what:<22} {ds.source}: {len(ds):,} examples{extra}"]
    # from the file's own counts: a held-out subset (--eval-data, capped) keeps its file's notes
    read, skipped = notes["rows_read"], sum(e["rows"] for e in notes["skipped"].values())
    lines = [f"{what:<22} {ds.source}: {read:,} rows read, {read - skipped:,} usable, {skipped:,} skipped"]
    for reason, e in notes["skipped"].items():
        lines.append(f"  skipped              {e['rows']:,} × {reason} (first: line {e['first_line']})")
    if notes.get("recoded_rows"):
        lines.append(f"  encoding             {notes['recoded_rows']:,} rows not UTF-8, read as cp1252 "
                     "(--encoding to choose)")
    if read and skipped / read > SKIP_WARNING:
        lines.append(f"warning: {skipped / read:.0%} of the rows of {ds.source} were "
                     "skipped; --on-bad-row error stops at the first one with its line number")
    return lines


def data_summary(s: Splits) -> str:
    """What the run read and how it split it, for the user to see before training starts: rows
    read and skipped (per reason, first line of each), labels with their counts, split sizes."""
    lines = _file_lines(s.full, "data")
    if s.held_out.source != s.full.source:  # --eval-data
        lines += _file_lines(s.held_out, "held-out data")
    counts = np.bincount(np.asarray(s.full.labels, dtype=int), minlength=len(s.full.label_names))
    lines.append(f"{'labels':<22} {len(counts)}: " + ", ".join(
        f"{name} {int(c):,}" for name, c in zip(s.full.label_names, counts)))
    val = f", validation {len(s.validation):,}" if s.validation is not None else ""
    lines.append(f"{'split':<22} train {len(s.train):,}, held-out {len(s.held_out):,}{val}")
    return "\n".join(lines)
