"""What a converted .tflite contains: op counts, ops left in float, broken scales.

The converter's quantizer leaves ops without an int8 kernel (SIN, FLOOR, SQRT, DIV, ...) in
float between a DEQUANTIZE and a QUANTIZE even when only int8 builtins are allowed: the model
converts, runs and is slower and less portable than asked for. The int8 lowering therefore
lists every float compute op and fails unless the plan asked for that node to stay float.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from irq.backends.tflite.flatmodel import FlatModel, OpView
from irq.backends.tflite.mapping import TensorMap

FLOAT_TYPES = {"FLOAT32", "FLOAT16", "FLOAT64"}
_CONVERSIONS = {"QUANTIZE", "DEQUANTIZE"}
MAX_SANE_SCALE = 1e6  # an activation scale this large means an infinity reached calibration


@dataclass(frozen=True)
class FloatOp:
    """An operator that computes in float in a model meant to be integer."""

    index: int
    op_type: str
    output: str
    onnx_nodes: tuple[str, ...]

    def describe(self) -> str:
        """One line naming the TFLite op and the ONNX node(s) it came from."""
        nodes = ", ".join(self.onnx_nodes) or "unknown ONNX node"
        return f"{self.op_type} (ONNX {nodes}; tensor {self.output})"


def op_census(flat: FlatModel) -> dict[str, int]:
    """Operator type -> count, most frequent first."""
    return dict(Counter(op.op_type for op in flat.ops()).most_common())


def float_ops(flat: FlatModel, tmap: TensorMap) -> list[FloatOp]:
    """Compute ops with a float input or output (QUANTIZE/DEQUANTIZE only convert, so not counted)."""
    found = []
    for op in flat.ops():
        if op.op_type in _CONVERSIONS or not _touches_float(flat, op):
            continue
        out = flat.tensor_name(op.outputs[0]) if op.outputs and op.outputs[0] >= 0 else "?"
        found.append(FloatOp(op.index, op.op_type, out, tuple(sorted(tmap.op_nodes.get(op.index, ())))))
    return found


def fed_by_float_ops(flat: FlatModel, indices: list[int]) -> set[int]:
    """Those of the ops at ``indices`` that read a float tensor written by a float compute op."""
    ops = flat.ops()
    producer = {t: op for op in ops for t in op.outputs}
    fed = set()
    for i in indices:
        for t in ops[i].inputs:
            p = producer.get(t)
            if p is not None and p.op_type not in _CONVERSIONS and flat.type_name(t) in FLOAT_TYPES:
                fed.add(i)
    return fed


def _touches_float(flat: FlatModel, op: OpView) -> bool:
    """True when any tensor the op reads or writes is float."""
    return any(t >= 0 and flat.type_name(t) in FLOAT_TYPES for t in (*op.inputs, *op.outputs))


def degenerate_scales(flat: FlatModel, tmap: TensorMap) -> list[str]:
    """Activation tensors whose int8 scale is not finite or absurdly large (e.g. 1e36)."""
    bad = []
    for index in flat.activations():
        scales, _ = flat.quant_params(index)
        if any(not math.isfinite(s) or s > MAX_SANE_SCALE for s in scales):
            label = tmap.values.get(index, flat.tensor_name(index))
            bad.append(f"{label} (scale {max(scales):.3g})")
    return bad
