"""rgft-edge: Residual-Guided Fine-Tuning for edge devices.

The public Python API (`RGFT`, `RGFTOptimizer`; see `rgft_edge.api`) is imported lazily, so device
runners that have no torch can still import the package.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["RGFT", "RGFTOptimizer", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("RGFT", "RGFTOptimizer"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'rgft_edge' has no attribute {name!r}")
