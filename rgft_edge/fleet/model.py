"""The model every fleet member holds: the same pretrained weights, data split, adapter and component
table on the server and on each client, so a component's name means the same tensors everywhere.

The trainable state travels as named arrays, one key per (component, parameter[, slice]):
`"<component>|<parameter>"` — the keys a reply may carry and the shapes they must have come from
here (`spec`), never from the reply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..components import ComponentTable, ParamRef
from ..data import TextDataset, load_dataset, split
from ..text import TextEncoder, batches
from .config import FleetConfig
from .partition import dirichlet_split


@dataclass(frozen=True)
class Slot:
    """One uploaded array: which component it belongs to and the parameter (slice) it fills."""
    component: int
    ref: ParamRef
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * 4  # float32


def slot_key(component: str, ref: ParamRef) -> str:
    key = f"{component}|{ref.name}"
    return key if ref.dim is None else f"{key}[{ref.dim}:{ref.start}:{ref.stop}]"


class FleetModel:
    """Model, tokenizer, splits and component table built from a FleetConfig (deterministic)."""

    def __init__(self, cfg: FleetConfig):
        import torch

        from rgft_edge.export.prepare import PrepareOptions, add_lora, load_hf
        from ..models import resolve_model
        from ..partition import build_component_table, freeze_embeddings
        from ..partition.layouts import find_layout
        from ..recipes.finetune import set_threads

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.cfg = cfg
        set_threads(cfg.threads)
        data = load_dataset(cfg.data, **({} if cfg.data in ("rotten-tomatoes", "bbc-news") else
                                         {"text_column": cfg.text_column, "label_column": cfg.label_column}))
        if cfg.validation:
            self.train_data, self.test_data, self.val_data = split(data, cfg.held_out, cfg.seed,
                                                                   validation=cfg.validation)
        else:
            (self.train_data, self.test_data), self.val_data = split(data, cfg.held_out, cfg.seed), None
        self.labels = data.label_names
        model_dir = resolve_model(cfg.model)
        torch.manual_seed(cfg.seed)  # the new head (and LoRA A) start the same on every member
        model = load_hf(model_dir, "sequence-classification", self.labels, attn_implementation=None)
        if cfg.adapter == "lora":
            found = find_layout(model)
            model, _ = add_lora(model, found[0].family if found else "generic",
                                PrepareOptions(lora_r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, seed=cfg.seed))
        else:
            freeze_embeddings(model)
        model.eval()  # dropout off: a round's update depends only on data and state
        self.model = model
        types = getattr(getattr(model, "config", None), "type_vocab_size", 0) > 0
        self.encoder = TextEncoder(model_dir, cfg.max_length,
                                   ("input_ids", "attention_mask") + (("token_type_ids",) if types else ()))
        example = self.tensors(self.encoder.encode(self.train_data.texts[:4]))
        self.table: ComponentTable = build_component_table(model, "lora" if cfg.adapter == "lora" else "block",
                                                           example)
        self.params = dict(model.named_parameters())
        self.slots: dict[str, Slot] = {}
        for i, comp in enumerate(self.table):
            for ref in comp.params:
                p = self.params[ref.name]
                shape = tuple(p[ref.index(p.ndim)].shape) if ref.dim is not None else tuple(p.shape)
                self.slots[slot_key(comp.name, ref)] = Slot(i, ref, shape)
        self.component_keys = [[k for k, s in self.slots.items() if s.component == i] for i in range(len(self.table))]
        self.component_bytes = np.array([sum(self.slots[k].nbytes for k in keys) for keys in self.component_keys])

    # -- state as named arrays ----------------------------------------------------------------
    def read(self, components: list[int] | None = None) -> dict[str, np.ndarray]:
        """Current values of the components' arrays (copies)."""
        comps = range(len(self.table)) if components is None else components
        out = {}
        for i in comps:
            for key in self.component_keys[i]:
                s = self.slots[key]
                p = self.params[s.ref.name].detach()
                out[key] = (p[s.ref.index(p.ndim)] if s.ref.dim is not None else p).numpy().copy()
        return out

    def write(self, arrays: dict[str, np.ndarray]) -> None:
        import torch

        with torch.no_grad():
            for key, value in arrays.items():
                s = self.slots[key]
                p = self.params[s.ref.name]
                target = p[s.ref.index(p.ndim)] if s.ref.dim is not None else p
                target.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))

    # -- data --------------------------------------------------------------------------------
    def client_data(self, partition: int) -> TextDataset:
        parts = dirichlet_split(self.train_data.labels, self.cfg.clients, self.cfg.alpha, self.cfg.seed)
        if not 0 <= partition < len(parts):
            raise ValueError(f"partition-id {partition} outside 0..{len(parts) - 1}")
        return self.train_data.subset(parts[partition].tolist())

    @staticmethod
    def tensors(batch: dict) -> dict:
        import torch

        return {k: torch.as_tensor(v) for k, v in batch.items()}

    def evaluate_splits(self) -> dict[str, float]:
        """Test accuracy / loss, and validation's (`val_` keys) when there is a validation split."""
        out = self.evaluate()
        if self.val_data is not None:
            out.update({f"val_{k}": v for k, v in self.evaluate(self.val_data).items()})
        return out

    def evaluate(self, data: TextDataset | None = None, batch_size: int = 64) -> dict[str, float]:
        """Accuracy and mean cross-entropy of the current model on `data` (default: the test split)."""
        import torch

        data = self.test_data if data is None else data
        correct, loss, n = 0, 0.0, 0
        with torch.no_grad():
            for batch in batches(self.encoder, data.texts, data.labels, batch_size):
                t = self.tensors(batch)
                labels = t.pop("labels")
                logits = self.model(**t).logits.float()
                loss += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
                correct += int((logits.argmax(-1) == labels).sum())
                n += len(labels)
        return {"accuracy": correct / n, "loss": loss / n, "examples": n}
