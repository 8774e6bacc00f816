"""Quantization-aware training that simulates exactly what the target's backend will run.

The model is calibrated by the target's own pipeline, its QDQ graph is translated into a torch
module with one fake quantizer per Q/DQ node (same formulas as ``irq.quant.arith``), the float
weights (and optionally the activation ranges) are fine-tuned with straight-through gradients,
and the result comes back as IR annotations lowered by the unchanged backends.

Exports are loaded lazily: ``irq.qat.cli`` (imported by every ``irq`` command) must not pull
in torch, an optional dependency.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from irq.qat.api import QATResult, qat
    from irq.qat.run import qat_compile
    from irq.qat.train import QATOptions

_EXPORTS = {"QATOptions": "irq.qat.train", "QATResult": "irq.qat.api", "qat": "irq.qat.api",
            "qat_compile": "irq.qat.run"}
__all__ = ["QATOptions", "QATResult", "qat", "qat_compile"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'irq.qat' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
