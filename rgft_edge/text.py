"""Tokenization and batching without transformers: `tokenizers` reads the model's tokenizer.json.

Devices run this too, so nothing here imports torch; batches are dicts of numpy int64 arrays.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import ModelError


class TextEncoder:
    def __init__(self, tokenizer_dir: str | Path, max_length: int = 64,
                 input_names: Sequence[str] = ("input_ids", "attention_mask", "token_type_ids"),
                 pad_to_max: bool = False, pad_multiple: int = 1):
        from tokenizers import Tokenizer

        path = Path(tokenizer_dir) / "tokenizer.json"
        if not path.is_file():
            raise ModelError(f"{tokenizer_dir}: no tokenizer.json (a fast tokenizer file is needed)")
        self.tok = Tokenizer.from_file(str(path))
        self.max_length = max_length
        self.input_names = tuple(input_names)
        self.pad_to_max = pad_to_max  # exported programs have a fixed sequence length
        # widths rounded up to a multiple: few distinct batch shapes, so the heap reuses its blocks
        # (under a memory budget; padding is masked out, so results do not change)
        self.pad_multiple = max(1, int(pad_multiple))
        cfg_path = Path(tokenizer_dir) / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        pad = cfg.get("pad_token")
        pad = pad.get("content") if isinstance(pad, dict) else pad
        self.pad_id = self.tok.token_to_id(pad) if pad else None
        if self.pad_id is None:
            self.pad_id = 0
        self.tok.no_padding()
        self.tok.enable_truncation(max_length)

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        encs = self.tok.encode_batch(list(texts))
        width = self.max_length if self.pad_to_max else max(1, max(len(e.ids) for e in encs))
        width = min(self.max_length, -(-width // self.pad_multiple) * self.pad_multiple)
        ids = np.full((len(encs), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encs), width), dtype=np.int64)
        types = np.zeros((len(encs), width), dtype=np.int64)
        for i, e in enumerate(encs):
            n = len(e.ids)
            ids[i, :n], mask[i, :n], types[i, :n] = e.ids, 1, e.type_ids
        out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {k: v for k, v in out.items() if k in self.input_names}


    def widen(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The batch padded to `max_length` (the widest any batch gets), labels untouched."""
        out = {}
        for k, v in batch.items():
            if k in self.input_names and v.ndim == 2 and v.shape[1] < self.max_length:
                fill = self.pad_id if k == "input_ids" else 0
                v = np.pad(v, ((0, 0), (0, self.max_length - v.shape[1])), constant_values=fill)
            out[k] = v
        return out


def batches(encoder: TextEncoder, texts: Sequence[str], labels: Sequence[int] | None,
            batch_size: int, seed: int | None = None, epochs: int = 1,
            drop_last: bool = False) -> Iterator[dict]:
    """Batches over `epochs` passes; a seed shuffles each pass (epoch e uses seed + e).
    `drop_last` keeps every batch full (exported programs with a fixed batch size)."""
    n = len(texts)
    stop = n - n % batch_size if drop_last else n
    for e in range(epochs):
        order = np.arange(n) if seed is None else np.random.default_rng(seed + e).permutation(n)
        for a in range(0, stop, batch_size):
            idx = order[a:a + batch_size]
            batch = encoder.encode([texts[i] for i in idx])
            if labels is not None:
                batch["labels"] = np.asarray([labels[i] for i in idx], dtype=np.int64)
            yield batch
