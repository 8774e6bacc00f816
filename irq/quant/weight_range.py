"""Which integer range a layer's weights use: int8, int4, or int7 where x86 kernels would overflow.

onnxruntime's u8s8 and s8s8 GEMM kernels on x86 CPUs without VNNI multiply with ``vpmaddubsw``,
which adds two u8 x s8 products into a saturating int16: 255 * 127 * 2 overflows, and a
full-range int8 weight then silently loses accuracy (measured here: fashion-cnn agreement 0.998
-> 0.975, EfficientNet-Lite0 0.85 -> 0.68). Weights in [-63, 63] cannot overflow
(255 * 63 * 2 < 32767). Depthwise convolutions run in a kernel of their own that does not
saturate, so they keep 8 bits.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import numpy as np
import onnx_ir as ir

from irq.ir.model import QModel, constant_array
from irq.quant.arith import quantize_weight
from irq.quant.spec import QType, Scheme

#: CPU flags (``/proc/cpuinfo``) of the int8 dot-product instructions that do not saturate.
_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8"})
#: Ops whose quantized kernels are GEMMs over u8 activations and s8 weights.
_GEMM_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@functools.cache
def host_int8_saturates() -> bool:
    """True on an x86 CPU whose flags show no VNNI (its u8s8 kernels use saturating pair sums)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False  # not Linux: cannot tell; assume a current CPU
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return not (_VNNI_FLAGS & set(flags))


def reduces_range(scheme: Scheme) -> bool:
    """Whether ``scheme`` asks for 7-bit GEMM weights on this machine."""
    return scheme.reduce_range == "yes" or (scheme.reduce_range == "auto" and host_int8_saturates())


def range_decision(scheme: Scheme) -> dict[str, object]:
    """What the report says about the choice (and why)."""
    reduced = reduces_range(scheme)
    if scheme.reduce_range == "auto":
        why = ("this x86 CPU has no VNNI: onnxruntime's int8 kernels would overflow int16 pair sums with "
               "full-range weights" if reduced else "this CPU's int8 kernels do not saturate")
    else:
        why = f"reduce_range={scheme.reduce_range} asked for it"
    return {"reduce_range": reduced, "setting": scheme.reduce_range, "why": why}


def is_depthwise(node: ir.Node) -> bool:
    """A Conv whose every group has one input channel (onnxruntime runs it without GEMM)."""
    if node.op_type != "Conv" or node.attributes.get_int("group", 1) <= 1:
        return False
    w = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    return w is not None and w.ndim >= 3 and w.shape[1] == 1


def _weights_per_channel(node: ir.Node) -> float:
    """A Conv's weights per output channel (other ops: unbounded, they are never small)."""
    w = constant_array(node.inputs[1]) if node.op_type == "Conv" and len(node.inputs) > 1 else None
    return float("inf") if w is None else float(np.prod(w.shape[1:]))


def weight_qtype(node: ir.Node, scheme: Scheme) -> QType:
    """The integer type of ``node``'s weight under ``scheme`` (shared by insert-qdq and QAT)."""
    if scheme.weight == QType.INT4:
        # A filter of a few weights (a depthwise 3x3 has 9, an RGB stem 27) cannot be held by 16
        # levels, and such layers are a few % of a network's weights: they keep 8 bits.
        small = scheme.int4_min_fan_in and _weights_per_channel(node) < scheme.int4_min_fan_in
        return QType.INT8 if small else QType.INT4
    if reduces_range(scheme) and node.op_type in _GEMM_OPS and not is_depthwise(node):
        return QType.INT7
    return QType.INT8


def weight_axis(node: ir.Node, rank: int) -> int | None:
    """The output-channel axis of a layer's weight (input 1)."""
    op = node.op_type
    if op == "Conv":
        return 0
    if op == "ConvTranspose":
        return 1 if node.attributes.get_int("group", 1) == 1 else None
    if op == "Gemm":
        return 0 if node.attributes.get_int("transB", 0) else 1
    if op == "MatMul":
        return rank - 1 if rank >= 2 else None
    return None


def layer_weight(qmodel: QModel, label: str, w: np.ndarray, axis: int | None,
                 qtype: QType) -> tuple[np.ndarray, np.ndarray]:
    """(integer weights, scales) of one layer as it will be written.

    A learned rounding (``qmodel.rounded_weights``) wins, then searched scales
    (``qmodel.weight_scales``), then round-to-nearest with max-abs scales. Bias correction and
    Q/DQ insertion both call this, so the shift that one measures is the one the other writes.
    """
    scales = qmodel.weight_scales.get(label)
    rounded = qmodel.rounded_weights.get(label)
    if rounded is not None and scales is not None and rounded.shape == w.shape:
        return rounded, np.asarray(scales, np.float32)
    return quantize_weight(w, axis, qtype, scales)


#: Ops whose constant weight (input 1; a Gather's table, input 0) insert-qdq quantizes.
WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Gather"})


def planned_weight(qmodel: QModel, node: ir.Node, label: str) -> tuple[int, np.ndarray, int | None, QType] | None:
    """(input index, float weights, axis, integer type) of the weight insert-qdq quantizes in ``node``."""
    # An embedding table (Gather's input 0) is quantized per row; a layer's weight is input 1.
    index = 0 if node.op_type == "Gather" else 1
    if node.op_type not in WEIGHT_OPS or len(node.inputs) < 2:
        return None
    w = constant_array(node.inputs[index])
    if w is None or w.dtype != np.float32:
        return None
    axis = (0 if index == 0 else weight_axis(node, w.ndim)) if qmodel.plan[label].per_channel else None
    return index, w, axis, weight_qtype(node, qmodel.scheme)
