"""RGFT inside a Hugging Face `Trainer`: a callback, and an optimizer the Trainer can drive.

    rgft = RGFT(model, policy="paced", example_inputs=example)
    trainer = Trainer(model=model, args=args, train_dataset=train,
                      callbacks=[RGFTCallback(rgft)],
                      optimizers=(RGFTTorchOptimizer(rgft, lr=3e-5), None))

`on_step_begin` selects this update's components (requires_grad set once for all the
gradient-accumulation micro-batches), `on_pre_optimizer_step` scores them from the accumulated
(and clipped) gradients, and the optimizer's `step()` updates only the selection with the
policy's LR multipliers. Trainer's LR scheduler drives the LR through `param_groups`; the
optimizer's `state_dict()` holds tensors and plain values only (AdamW state per component, the
error map, the policy's state, the step), so Trainer's checkpoints save and resume it and load with
`weights_only=True`. Works with peft models (LoRA, IA3, ...): their trainable parameters are the
components (`RGFT(..., granularity="lora")` for one component per LoRA-adapted module).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from .api import RGFT
from .optim import ComponentAdamW

__all__ = ["RGFTCallback", "RGFTTorchOptimizer"]


class RGFTTorchOptimizer(torch.optim.Optimizer):
    """The per-component AdamW of an `RGFT`, dressed as a `torch.optim.Optimizer`."""

    def __init__(self, rgft: RGFT, lr: float = 3e-5, weight_decay: float = 0.01, evict_after: int = 200):
        super().__init__(list(rgft._params.values()), dict(lr=lr, weight_decay=weight_decay))
        self.rgft = rgft
        self.adamw = ComponentAdamW(rgft.table, lr, weight_decay=weight_decay, evict_after=evict_after)
        rgft._optimizer = self  # rgft.save_checkpoint() saves this AdamW's state

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        self.adamw.lr = self.param_groups[0]["lr"]  # the Trainer's scheduler writes it here
        if self.rgft.selection is not None:
            self.rgft.apply_update(self.adamw)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.rgft._params.values():
            p.grad = None

    def state_dict(self) -> dict[str, Any]:
        tensors, meta = self.adamw.state_tensors()
        r = self.rgft
        return {"state": {}, "param_groups": [{k: v for k, v in g.items() if k != "params"}
                                              for g in self.param_groups],
                "rgft": {"tensors": {k: v.detach().clone() for k, v in tensors.items()},
                         "meta": json.dumps(meta), "step": r.step_count,
                         "error_map": json.dumps({k: v.tolist() for k, v in r.error_map.state_dict().items()}),
                         "policy": json.dumps(r.policy.state_dict())}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for group, saved in zip(self.param_groups, state_dict["param_groups"]):
            group.update({k: v for k, v in saved.items() if k != "params"})
        saved, r = state_dict["rgft"], self.rgft
        self.adamw.load_state_tensors(saved["tensors"], json.loads(saved["meta"]),
                                      lambda name, arr: arr.detach().clone().to(r._params[name].dtype))
        r.error_map.load_state_dict({k: np.asarray(v) for k, v in json.loads(saved["error_map"]).items()})
        r.policy.load_state_dict(json.loads(saved["policy"]))
        r.step_count = int(saved["step"])


class RGFTCallback(TrainerCallback):
    """Selects before each update, scores before the optimizer step (use with `RGFTTorchOptimizer`)."""

    def __init__(self, rgft: RGFT):
        self.rgft = rgft

    def on_step_begin(self, args, state, control, **kwargs):
        if self.rgft.selection is None:  # once per update, not per accumulated micro-batch
            self.rgft.begin_step()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.rgft.selection is not None:
            self.rgft.end_step()
