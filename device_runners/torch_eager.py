"""Eager-torch backend: the first thin adapter under the shared RGFT loop.

Unselected components get requires_grad=False for the step, so autograd skips their weight-gradient
GEMMs and stops below the lowest trainable parameter. Activation attribution reads ||h|| and
||dL/dh|| through forward hooks plus tensor hooks, only on outputs that are part of the graph.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, MutableMapping

import numpy as np
import torch
import torch.nn as nn

from rgft_edge.backend import Batch, EvalOutput, StepOutput
from rgft_edge.components import ComponentTable

# (model, batch of tensors) -> (loss, logits or None); the task decides what the loss is.
LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor | None]]


def classification_loss(model: nn.Module, batch: dict[str, torch.Tensor]):
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = model(**inputs)
    logits = out.logits if hasattr(out, "logits") else out
    return nn.functional.cross_entropy(logits.float(), batch["labels"]), logits


def causal_lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]):
    ids = batch["input_ids"]
    labels = ids.masked_fill(batch["attention_mask"] == 0, -100) if "attention_mask" in batch else ids
    out = model(**{k: v for k, v in batch.items() if k != "labels"}, labels=labels)
    return out.loss, None


def tensor_loss(model: nn.Module, batch: dict[str, torch.Tensor]):
    """Plain nn.Module on `inputs` (e.g. a CNN): cross-entropy against `labels`."""
    logits = model(batch["inputs"])
    return nn.functional.cross_entropy(logits, batch["labels"]), logits


def _first_tensor(x: Any) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    if hasattr(x, "last_hidden_state"):
        return x.last_hidden_state
    if hasattr(x, "logits"):
        return x.logits
    return None


class TorchEagerBackend:
    """Implements `rgft_edge.backend.Backend` over any nn.Module and its component table."""

    name = "torch"
    activation_scores = True

    def __init__(self, model: nn.Module, table: ComponentTable, loss_fn: LossFn = classification_loss,
                 eval_batch_size: int | None = 64):
        # eval 64: no fixed shapes in eager mode, bigger batches evaluate faster
        self.model, self.table, self.loss_fn = model, table, loss_fn
        self.eval_batch_size = eval_batch_size
        named = dict(model.named_parameters())
        self._params = {n: named[n] for n in sorted(table.param_names())}
        self._comp_params = [sorted({r.name for r in c.params}) for c in table]
        self._norms: dict[int, list[float]] = {}
        self._measuring = False
        self._hook_s = 0.0
        self._handles = []
        self._install_hooks()

    # -- activation hooks ---------------------------------------------------------------------
    def _install_hooks(self) -> None:
        by_module: dict[tuple[str, str], list[tuple[int, int, int]]] = defaultdict(list)
        for i, c in enumerate(self.table):
            if c.hook is not None:
                by_module[(c.hook.module, c.hook.mode)].append((i, c.hook.start, c.hook.stop))
        for (path, mode), targets in by_module.items():
            mod = self.model.get_submodule(path)
            if mode == "input":
                self._handles.append(mod.register_forward_pre_hook(
                    lambda m, args, t=targets: self._observe(_first_tensor(args), t)))
            else:
                self._handles.append(mod.register_forward_hook(
                    lambda m, args, out, t=targets: self._observe(_first_tensor(out), t)))

    def _observe(self, h: torch.Tensor | None, targets: list[tuple[int, int, int]]) -> None:
        if not self._measuring or h is None or not h.requires_grad:
            return
        t0 = time.perf_counter()
        hd = h.detach()
        for i, a, b in targets:
            part = hd[..., a:b] if b > 0 else hd
            self._norms[i] = [float(torch.linalg.vector_norm(part)), 0.0]

        def grad_hook(g: torch.Tensor) -> None:
            t1 = time.perf_counter()
            for i, a, b in targets:
                part = g[..., a:b] if b > 0 else g
                if i in self._norms:
                    self._norms[i][1] = float(torch.linalg.vector_norm(part))
            self._hook_s += time.perf_counter() - t1

        h.register_hook(grad_hook)
        self._hook_s += time.perf_counter() - t0

    # -- Backend interface --------------------------------------------------------------------
    def parameters(self) -> MutableMapping[str, torch.Tensor]:
        return {n: p.data for n, p in self._params.items()}

    def set_trainable(self, trainable: np.ndarray) -> set[str]:
        on = {n for i in np.flatnonzero(trainable) for n in self._comp_params[i]}
        for n, p in self._params.items():
            p.requires_grad_(n in on)
            p.grad = None
        return on

    def to_tensors(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(v) for k, v in batch.items()}

    def train_step(self, batch: Batch, trainable: np.ndarray, measure_activations: bool) -> StepOutput:
        on = self.set_trainable(trainable)
        self.model.train()
        self._norms, self._measuring, self._hook_s = {}, measure_activations, 0.0
        try:
            loss, _ = self.loss_fn(self.model, self.to_tensors(batch))
            if loss.requires_grad and torch.isfinite(loss):
                loss.backward()
        finally:
            self._measuring = False
        grads = {n: self._params[n].grad for n in on if self._params[n].grad is not None}
        norms = {i: (g, h) for i, (h, g) in self._norms.items()} if measure_activations else None
        # the estimator's work inside forward/backward, counted as tracking by the loop
        return StepOutput(float(loss.detach()), grads, norms, {"hook_time_s": self._hook_s})

    def commit(self, touched: list[str]) -> None:
        for p in self._params.values():  # free gradient memory between steps
            p.grad = None

    @torch.no_grad()
    def evaluate(self, batches: Iterable[Batch]) -> EvalOutput:
        self.model.eval()
        total, n, correct, seen = 0.0, 0, 0, 0
        for batch in batches:
            t = self.to_tensors(batch)
            loss, logits = self.loss_fn(self.model, t)
            size = int(next(iter(t.values())).shape[0])
            total += float(loss) * size
            n += size
            if logits is not None and "labels" in t:
                correct += int((logits.argmax(-1) == t["labels"]).sum())
                seen += size
        metrics = {"loss": total / max(1, n)}
        if seen:
            metrics["accuracy"] = correct / seen
        else:
            metrics["perplexity"] = float(np.exp(min(50.0, metrics["loss"])))
        return EvalOutput(metrics["loss"], metrics)

    def trainable_state(self) -> dict[str, np.ndarray]:
        return {n: p.detach().cpu().contiguous().numpy().copy() for n, p in self._params.items()}

    def rng_state(self) -> np.ndarray:
        """Torch's CPU generator (dropout masks), so a resumed run draws the same masks."""
        return torch.get_rng_state().numpy().copy()

    def set_rng_state(self, state: np.ndarray) -> None:
        torch.set_rng_state(torch.from_numpy(np.asarray(state, dtype=np.uint8).copy()))

    def environment(self) -> dict:
        return {"torch": torch.__version__, "threads": torch.get_num_threads()}

    def export_adapted(self, out: Path) -> dict:
        """Adapted trainable weights as safetensors (what a `torch` artifact loads)."""
        from safetensors.numpy import save_file

        out.mkdir(parents=True, exist_ok=True)
        path = out / "trainable.safetensors"
        save_file(self.trainable_state(), str(path), {"format": "rgft-edge trainable"})
        return {"safetensors": str(path)}

    def activation_bytes(self, batch: Batch) -> np.ndarray:
        """Bytes autograd saves for backward, per component, on one fully-trainable step."""
        self.set_trainable(np.ones(len(self.table), bool))
        self.model.train()
        try:
            return saved_activation_bytes(self.model, self.table,
                                          lambda: self.loss_fn(self.model, self.to_tensors(batch))[0])
        finally:
            self.commit([])

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def saved_activation_bytes(model: nn.Module, table: ComponentTable, forward: Callable[[], Any]) -> np.ndarray:
    """Bytes autograd saves for backward per component while `forward()` runs (the parameters
    that should count must already require grad). Saved tensors are attributed to the component
    whose parameters most recently ran (forward order), deduplicated by storage: what a step keeps
    alive from its cut depth up. The graph is never back-propagated."""
    owner: dict[str, int] = {}
    for i, c in enumerate(table):
        for r in c.params:
            owner.setdefault(r.name.rsplit(".", 1)[0], i)
    current = [0]
    handles = [mod.register_forward_pre_hook(lambda m, a, i=owner[path]: current.__setitem__(0, i))
               for path, mod in model.named_modules() if path in owner]
    sizes = np.zeros(len(table))
    seen: set[int] = set()

    def pack(t: torch.Tensor):
        try:
            key = t.untyped_storage().data_ptr()
            if key not in seen and not isinstance(t, nn.Parameter):
                seen.add(key)
                sizes[current[0]] += t.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):
            pass  # tensor subclasses without plain storage (int8 weights) are not activations
        return None  # counted, not kept: nothing back-propagates, and the profile costs no memory

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = forward()
        del out
    finally:
        for h in handles:
            h.remove()
    return sizes
