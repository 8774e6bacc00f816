"""Make the TFLite model quantize activations with the IR's calibrated ranges, and measure it.

The converter calibrates in two steps: it records min/max statistics on every activation of a
float .tflite, then its quantizer turns those into scales, zero points and requantized biases,
honouring each op's constraints (equal scales through pooling, concatenation and reshapes;
fixed output scales for softmax, logistic and tanh). Replacing the recorded statistics by the
IR's ranges *between* the two steps therefore carries percentile/entropy/MSE clipping into the
.tflite without touching any of those rules: a rewrite of the finished int8 flatbuffer would
have to re-derive them (and the int32 biases) by hand.
"""

from __future__ import annotations

import math
import statistics

from irq.backends.tflite.flatmodel import FlatModel
from irq.quant.spec import TensorRange

QMIN, QMAX = -128, 127
_FIXED_SCALE_OPS = {"SOFTMAX", "LOGISTIC", "TANH", "LOG_SOFTMAX"}


def inject_ranges(calibrated: FlatModel, values: dict[int, str], ranges: dict[str, TensorRange]) -> int:
    """Overwrite the recorded min/max of mapped tensors with the IR's ranges; return how many."""
    import numpy as np

    count = 0
    for index, value in values.items():
        r = ranges.get(value)
        q = calibrated.tensor(index).quantization
        if r is None or q is None or calibrated.min_max(index) is None:
            continue
        q.min = np.array([r.lo], dtype=np.float32)
        q.max = np.array([r.hi], dtype=np.float32)
        count += 1
    return count


def int8_params(lo: float, hi: float) -> tuple[float, int]:
    """Scale and zero point TFLite derives from a range (widened to contain 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / (QMAX - QMIN)
    if scale <= 0:
        return 0.0, 0
    return scale, int(min(QMAX, max(QMIN, round(QMIN - lo / scale))))


def fidelity(final: FlatModel, values: dict[int, str], ranges: dict[str, TensorRange],
             converter_stats: dict[str, tuple[float, float]] | None = None) -> dict:
    """How far the int8 model's activation scales are from the IR's ranges.

    ``scale_ratio`` is TFLite scale / IR scale over mapped per-tensor int8 activations (1.0 is
    exact); ``calibrated_scale_ratio`` is the same for ``converter_stats`` (tensor name -> the
    converter's own min/max, before the IR's ranges replaced them). Outputs of fixed-scale ops
    are counted, not compared.
    """
    producers = {t: op.op_type for op in final.ops() for t in op.outputs}
    ratios, zp_diffs, before, worst = [], [], [], []
    fixed = 0
    for index, value in values.items():
        r = ranges.get(value)
        scales, zps = final.quant_params(index)
        if r is None or len(scales) != 1 or final.type_name(index) != "INT8":
            continue
        if producers.get(index) in _FIXED_SCALE_OPS:
            fixed += 1
            continue
        ir_scale, ir_zp = int8_params(r.lo, r.hi)
        if ir_scale <= 0:
            continue
        ratio = scales[0] / ir_scale
        ratios.append(ratio)
        zp_diffs.append(abs(zps[0] - ir_zp))
        worst.append((abs(math.log(ratio)) if ratio > 0 else math.inf, value, ratio))
        # quantization keeps tensor names, so the converter's own statistics are found by name
        stats = (converter_stats or {}).get(final.tensor_name(index))
        if stats is not None:
            cal_scale, _ = int8_params(*stats)
            before.append(cal_scale / ir_scale)
    worst.sort(reverse=True)
    return {
        "activations": len(final.activations()),
        "mapped": len(values),
        "compared": len(ratios),
        "fixed_scale_outputs": fixed,
        "scale_ratio": _summary(ratios),
        "within_1pct": sum(1 for x in ratios if abs(x - 1) <= 0.01),
        "zero_point_max_diff": max(zp_diffs, default=0),
        "calibrated_scale_ratio": _summary(before),
        "worst": [{"value": v, "scale_ratio": round(x, 4)} for _, v, x in worst[:3]],
    }


def _summary(xs: list[float]) -> dict | None:
    """Min, median and max of a list (None when empty)."""
    if not xs:
        return None
    return {"min": round(min(xs), 4), "median": round(statistics.median(xs), 4), "max": round(max(xs), 4)}
