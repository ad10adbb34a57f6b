"""Keep third-party start-up noise (torchao's optional CUDA kernels, pytree deprecations,
transformers' load bars) out of the user's console; real errors still surface."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_third_party() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for name in ("torchao", "torch.utils._pytree", "transformers.modeling_utils"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
