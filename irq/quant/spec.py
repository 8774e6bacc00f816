"""Quantization specs: frozen, self-validating descriptions of how a tensor or layer is quantized.

These are the data that policy passes write and mechanics passes and backends read. Every
spec checks itself on construction, so an impossible spec can never reach a backend.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np


class QType(str, enum.Enum):
    """An integer storage type for quantized values."""

    INT4 = "int4"
    UINT4 = "uint4"
    INT7 = "int7"  # int8 storage, values in [-64, 63]: x86 kernels without VNNI cannot overflow
    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"
    UINT16 = "uint16"

    @property
    def bits(self) -> int:
        """Storage width in bits."""
        return int(self.value.removeprefix("u").removeprefix("int"))

    @property
    def signed(self) -> bool:
        """True for the signed types."""
        return not self.value.startswith("u")

    @property
    def qmin(self) -> int:
        """Smallest representable integer."""
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        """Largest representable integer."""
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype that stores this type (int4 values are held in int8 arrays)."""
        return np.dtype({4: np.int8, 7: np.int8, 8: np.int8, 16: np.int16}[self.bits] if self.signed
                        else {4: np.uint8, 8: np.uint8, 16: np.uint16}[self.bits])


class Precision(str, enum.Enum):
    """How one layer is executed in the lowered artifact."""

    INT8 = "int8"  # int8 weights, 8-bit activations
    INT16 = "int16"  # int8 weights, 16-bit activations
    FP16 = "fp16"
    FP32 = "fp32"
    DYNAMIC_INT8 = "dynamic-int8"  # int8 weights, activations quantized at run time
    INT4_WEIGHT = "int4-weight"  # block-wise int4 weights, float activations
    INT8_WEIGHT = "int8-weight"  # int8 weights, float activations (Core ML's W8)

    @property
    def is_float(self) -> bool:
        """True when the layer keeps float weights and activations."""
        return self in (Precision.FP16, Precision.FP32)

    @property
    def has_qdq_weights(self) -> bool:
        """True when insert-qdq writes this layer's weights as int8 (or int4) through DequantizeLinear."""
        return self in (Precision.INT8, Precision.INT16, Precision.INT8_WEIGHT)


@dataclass(frozen=True)
class TensorRange:
    """A calibrated real-valued range of an activation tensor."""

    lo: float
    hi: float
    method: str = "minmax"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            raise ValueError(f"range must be finite, got [{self.lo}, {self.hi}]")
        if self.lo > self.hi:
            raise ValueError(f"range low {self.lo} exceeds high {self.hi}")


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor is quantized: integer type, scale(s), zero point(s) and granularity.

    ``axis`` is None for per-tensor specs; ``block_size`` is set for block-wise specs.
    """

    qtype: QType
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None
    block_size: int | None = None

    def __post_init__(self) -> None:
        if not self.scale:
            raise ValueError("a quantization spec needs at least one scale")
        if len(self.scale) != len(self.zero_point):
            raise ValueError(f"{len(self.scale)} scales but {len(self.zero_point)} zero points")
        if any(not (s > 0 and math.isfinite(s)) for s in self.scale):
            raise ValueError("scales must be finite and > 0")
        q = self.qtype
        if any(z < q.qmin or z > q.qmax for z in self.zero_point):
            raise ValueError(f"zero point outside [{q.qmin}, {q.qmax}] for {q.value}")
        if self.axis is None and self.block_size is None and len(self.scale) != 1:
            raise ValueError("a per-tensor spec has exactly one scale")
        if self.block_size is not None and self.block_size <= 0:
            raise ValueError("block size must be positive")

    @property
    def per_channel(self) -> bool:
        """True when the spec has one scale per channel along ``axis``."""
        return self.axis is not None and self.block_size is None

    def check_axis(self, rank: int) -> None:
        """Raise ValueError when ``axis`` does not fit a tensor of ``rank`` dimensions."""
        if self.axis is not None and not -rank <= self.axis < rank:
            raise ValueError(f"axis {self.axis} out of range for rank {rank}")


@dataclass(frozen=True)
class Scheme:
    """A whole-model quantization scheme, as a target preset or recipe states it."""

    activation: QType = QType.UINT8
    weight: QType = QType.INT8
    per_channel: bool = True
    symmetric_activations: bool = False
    calibration: str = "percentile"  # method name understood by the calibrate pass (percentile: 99.99)
    int4_block_size: int = 32
    #: Under int4 weights, convolutions with fewer weights per output channel keep int8 (0: none do).
    int4_min_fan_in: int = 32
    #: 7-bit weights for layers run by u8/s8 GEMM kernels: "no", "yes", or "auto" (yes on an x86
    #: CPU without VNNI, whose int8 kernels saturate int16 pair sums; see irq.quant.weight_range).
    reduce_range: str = "no"

    def __post_init__(self) -> None:
        if self.weight not in (QType.INT8, QType.INT4, QType.UINT8):
            raise ValueError(f"unsupported weight type {self.weight.value}")
        if self.int4_block_size < 16 or self.int4_block_size & (self.int4_block_size - 1):
            raise ValueError("int4 block size must be a power of two >= 16")
        if self.reduce_range not in ("no", "yes", "auto"):
            raise ValueError(f"reduce_range must be no, yes or auto, not {self.reduce_range!r}")


class Granularity(str, enum.Enum):
    """How many scales a weight gets: one per output channel, or one for the tensor."""

    PER_CHANNEL = "per-channel"
    PER_TENSOR = "per-tensor"


class DecisionSource(str, enum.Enum):
    """Who decided a layer's precision: what later stages may override and what they must keep."""

    DEFAULT = "default"          # the target's default precision: passes may revise it
    RECIPE = "recipe"            # a recipe rule
    HAZARD = "range hazard"      # plan-precision kept it float for a measured range hazard
    SENSITIVITY = "sensitivity"  # the budget search (and the float boundary it implies)
    PINNED = "pinned"            # set by a caller before plan-precision


@dataclass(frozen=True)
class LayerDecision:
    """The precision chosen for one layer, who chose it (``source``) and why, in words (``reason``)."""

    precision: Precision
    reason: str = "default"
    granularity: Granularity = Granularity.PER_CHANNEL
    details: dict[str, float] = field(default_factory=dict, compare=False, hash=False)
    source: DecisionSource | None = None  # None: DEFAULT for the default reason, else PINNED

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "granularity", Granularity(self.granularity))
        except ValueError:
            raise ValueError(f"granularity must be per-channel or per-tensor, not {self.granularity}") from None
        if self.source is None:
            object.__setattr__(self, "source", DecisionSource.DEFAULT if self.reason == "default"
                               else DecisionSource.PINNED)

    @property
    def per_channel(self) -> bool:
        """True for per-channel scales."""
        return self.granularity is Granularity.PER_CHANNEL
