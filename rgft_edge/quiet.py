"""Keep third-party start-up noise (torchao's optional CUDA kernels, pytree deprecations,
transformers' load bars) out of the user's console; real errors still surface. And keep packages a
model load does not need out of a device's memory (`without_optional_imports`)."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from contextlib import contextmanager
from typing import Iterator


def quiet_third_party() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for name in ("torchao", "torch.utils._pytree", "transformers.modeling_utils"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    warnings.filterwarnings("ignore", category=DeprecationWarning)


# What importing a transformers model class drags in only because it is installed: scipy (for the
# object-detection losses' Hungarian matching) and torchao (for loading torchao-quantized HF
# checkpoints). Measured on MiniLM: +35 MB and +11 MB resident for the whole run.
OPTIONAL_FOR_LOADING = ("scipy", "torchao")


@contextmanager
def without_optional_imports(names: tuple[str, ...] = OPTIONAL_FOR_LOADING) -> Iterator[None]:
    """Inside: the packages in `names` not yet imported look absent (a `None` entry in sys.modules
    makes `importlib.util.find_spec` answer None). After: they import normally again, and
    transformers' cached availability answers are cleared; only the transformers modules first
    imported inside keep what they decided (no HF torchao checkpoints, no DETR losses in this process)."""
    hidden = [n for n in names if n not in sys.modules]
    for n in hidden:
        sys.modules[n] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for n in hidden:
            if sys.modules.get(n, 0) is None:
                del sys.modules[n]
        iu = sys.modules.get("transformers.utils.import_utils")
        for n in hidden:
            check = getattr(iu, f"is_{n}_available", None)
            if hasattr(check, "cache_clear"):
                check.cache_clear()
