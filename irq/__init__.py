"""irq: an ONNX-centric quantization compiler.

``irq.compile(model, target, out_dir, calib=..., eval=...)`` returns the report dict;
``irq.verify`` and ``irq.audit`` mirror the CLI. Heavy dependencies load lazily.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def compile(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See ``irq.compiler.compile``."""
    from irq.compiler import compile as _compile

    return _compile(*args, **kwargs)


def verify(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See ``irq.api.verify``."""
    from irq.api import verify as _verify

    return _verify(*args, **kwargs)


def audit(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See ``irq.api.audit``."""
    from irq.api import audit as _audit

    return _audit(*args, **kwargs)
