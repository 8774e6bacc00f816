"""Core ML deployment targets and what each allows the lowering to emit.

=========  ===========  ===================================  ==============================
iOS        macOS        int8 weights (from a constant DQ)    activation Q/DQ (w8a8)
=========  ===========  ===================================  ==============================
iOS16      macOS13      ``constexpr_affine_dequantize``      unavailable: LoweringError
iOS17      macOS14      ``constexpr_affine_dequantize``      MIL ``quantize``/``dequantize``
iOS18      macOS15      ``constexpr_blockwise_shift_scale``  MIL ``quantize``/``dequantize``
=========  ===========  ===================================  ==============================

``constexpr_affine_dequantize`` exists from iOS16 (MIL opset CoreML6). iOS18 still accepts it
(checked with coremltools 9.0) but supersedes it with ``constexpr_blockwise_shift_scale`` (scale
and offset have the weight's rank, one entry per output channel here), which is also what
coremltools' own weight quantizer emits for iOS18, so iOS18 packages use that.
``quantize``/``dequantize`` only exist from iOS17, so a graph with activation Q/DQ pairs
cannot be expressed for iOS16 without re-deciding the quantization, which a backend never does.
The default is iOS17.
"""

from __future__ import annotations

from dataclasses import dataclass

import coremltools as ct

from irq.errors import InputError

_IOS_EQUIVALENT = {"iOS16": 16, "iOS17": 17, "iOS18": 18, "macOS13": 16, "macOS14": 17, "macOS15": 18}


@dataclass(frozen=True)
class Deployment:
    """A minimum deployment target, e.g. ``iOS17`` or ``macOS15``."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in _IOS_EQUIVALENT:
            raise InputError(f"unknown Core ML deployment target {self.name!r}; "
                             f"known: {', '.join(_IOS_EQUIVALENT)}")

    @property
    def ios(self) -> int:
        """The equivalent iOS major version (macOS14 -> 17)."""
        return _IOS_EQUIVALENT[self.name]

    @property
    def ct_target(self) -> ct.target:
        """The coremltools ``ct.target`` member (also the MIL opset version)."""
        return getattr(ct.target, self.name)

    @property
    def activation_quantization(self) -> bool:
        """True when MIL ``quantize``/``dequantize`` exist (iOS17+)."""
        return self.ios >= 17

    @property
    def weight_op(self) -> str:
        """The constexpr op that carries int8 weights."""
        return "constexpr_blockwise_shift_scale" if self.ios >= 18 else "constexpr_affine_dequantize"
