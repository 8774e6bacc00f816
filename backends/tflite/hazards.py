"""Graph rewrites that keep onnx2tf away from constructs it lowers badly.

Two hazards, both measured with onnx2tf 1.29.24:

* Q/DQ graphs convert without error but give wrong numbers, so they are refused.
* A padded MaxPool becomes ``PADV2`` with the float dtype's minimum as the pad value. In a
  full-integer model that value joins the tensor's calibrated range, the int8 scale grows to
  ~1e36 and XNNPACK refuses the model. :func:`split_maxpool_padding` moves the padding into an
  explicit ``Pad`` whose constant is a finite lower bound of the pooled tensor: padding with
  any value no larger than the input's minimum leaves every window's maximum unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from irq.errors import LoweringError
from irq.ir.model import constant_array, node_label
from irq.quant.spec import TensorRange

_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
            "QLinearMatMul", "QLinearAdd", "QLinearMul", "MatMulInteger", "ConvInteger"}


@dataclass(frozen=True)
class PadFix:
    """One MaxPool whose padding became an explicit Pad."""

    node: str
    pad_value: float
    source: str  # "relu", "clip", "range" or "observed"
    pad_output: str


def check_float_graph(graph: ir.Graph, model_name: str) -> None:
    """Raise LoweringError when the graph holds quantization nodes (onnx2tf mis-converts them)."""
    found = [f"{node_label(n)} ({n.op_type})" for n in graph if n.op_type in _QDQ_OPS]
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise LoweringError(
            f"{model_name}: the TFLite backend needs a float graph but found quantization nodes "
            f"{shown}; run a tflite-* target pipeline (it never inserts Q/DQ)")


def structural_lower_bound(value: ir.Value) -> tuple[float, str] | None:
    """A lower bound of ``value`` that its producer guarantees (ReLU: 0, Clip: its minimum)."""
    producer = value.producer()
    if producer is None or producer.domain not in ("", "ai.onnx"):
        return None
    if producer.op_type == "Relu":
        return 0.0, "relu"
    if producer.op_type == "Clip":
        lo = None
        if len(producer.inputs) > 1:
            lo = constant_array(producer.inputs[1])
        elif "min" in producer.attributes:  # opset < 11 keeps the bounds as attributes
            lo = np.asarray(producer.attributes["min"].as_float())
        if lo is not None and lo.size == 1 and math.isfinite(float(lo)):
            return float(lo), "clip"
    return None


def padded_maxpools(graph: ir.Graph) -> list[ir.Node]:
    """MaxPool nodes whose padding onnx2tf would fill with the dtype minimum."""
    found = []
    for node in graph:
        if node.op_type != "MaxPool" or node.domain not in ("", "ai.onnx"):
            continue
        if len(node.outputs) > 1 and node.outputs[1].uses():
            continue  # the Indices output refers to the unpadded input; leave such nodes alone
        pads = _pads_attr(node)
        auto = node.attributes.get_string("auto_pad", "NOTSET")
        ceil = node.attributes.get_int("ceil_mode", 0)
        if any(pads) or auto in ("SAME_UPPER", "SAME_LOWER") or ceil:
            found.append(node)
    return found


def split_maxpool_padding(graph: ir.Graph, ranges: dict[str, TensorRange],
                          observe: Callable[[Sequence[str]], dict[str, float]] | None = None,
                          structural_only: bool = False) -> list[PadFix]:
    """Replace the padding of every padded MaxPool by an explicit finite-valued Pad.

    The pad value is, in order of preference: the bound a ReLU/Clip producer guarantees, the
    IR's calibrated lower bound (``ranges``), or the minimum ``observe`` reports on the
    calibration data. With a clipped (percentile) range the value can sit above rare outliers;
    the int8 model saturates those to the same bound, so the pooled result is unchanged there.
    ``structural_only`` rewrites just the MaxPools with a ReLU/Clip bound, which is exact in
    any precision (float models use it so that XNNPACK gets PAD instead of PADV2).
    """
    nodes = padded_maxpools(graph)
    if structural_only:
        nodes = [n for n in nodes if n.inputs[0] is not None and structural_lower_bound(n.inputs[0])]
    bounds: dict[str, tuple[float, str]] = {}
    missing = []
    for node in nodes:
        x = node.inputs[0]
        assert x is not None and x.name is not None
        bound = structural_lower_bound(x)
        if bound is None and x.name in ranges:
            bound = (ranges[x.name].lo, "range")
        if bound is None:
            missing.append(x.name)
        else:
            bounds[x.name] = bound
    if missing:
        if observe is None:
            raise LoweringError(f"MaxPool input(s) {', '.join(missing)} have no calibrated range "
                                "and no calibration data to bound them; cannot pad them safely")
        bounds.update({name: (lo, "observed") for name, lo in observe(missing).items()})
    fixes = []
    for node in nodes:
        x = node.inputs[0]
        assert x is not None and x.name is not None
        value, source = bounds[x.name]
        pad_out = _insert_pad(graph, node, value)
        fixes.append(PadFix(node_label(node), value, source, pad_out.name or ""))
    return fixes


def _pads_attr(node: ir.Node) -> list[int]:
    """The MaxPool's explicit ``pads`` attribute (all zeros when absent)."""
    attr = node.attributes.get("pads")
    return list(attr.as_ints()) if attr is not None else []


def _spatial_pads(node: ir.Node, x: ir.Value) -> tuple[list[int], list[int]]:
    """Begin and end padding per spatial axis, with ceil_mode and auto_pad made explicit."""
    kernel = list(node.attributes["kernel_shape"].as_ints())
    rank = len(kernel)
    strides = list(node.attributes.get_ints("strides", [1] * rank))
    dil = list(node.attributes.get_ints("dilations", [1] * rank))
    pads = _pads_attr(node) or [0] * (2 * rank)
    begin, end = pads[:rank], pads[rank:]
    auto = node.attributes.get_string("auto_pad", "NOTSET")
    ceil = node.attributes.get_int("ceil_mode", 0)
    if auto in ("SAME_UPPER", "SAME_LOWER") or ceil:
        dims = _spatial_dims(node, x, rank)
        for i, size in enumerate(dims):
            eff = (kernel[i] - 1) * dil[i] + 1
            if auto in ("SAME_UPPER", "SAME_LOWER"):
                out = -(-size // strides[i])
                total = max(0, (out - 1) * strides[i] + eff - size)
                small = total // 2
                begin[i], end[i] = (small, total - small) if auto == "SAME_UPPER" else (total - small, small)
            else:
                span = size + begin[i] + end[i] - eff
                out = -(-span // strides[i]) + 1
                if (out - 1) * strides[i] >= size + begin[i]:
                    out -= 1  # a last window starting in the end padding is dropped (ONNX/PyTorch)
                end[i] += max(0, (out - 1) * strides[i] + eff - (size + begin[i] + end[i]))
    return begin, end


def _spatial_dims(node: ir.Node, x: ir.Value, rank: int) -> list[int]:
    """Static spatial sizes of a MaxPool input (needed for auto_pad and ceil_mode)."""
    shape = x.shape
    dims = [d for d in (list(shape)[-rank:] if shape is not None and len(shape) == rank + 2 else [])
            if isinstance(d, int)]
    if len(dims) != rank:
        raise LoweringError(f"MaxPool {node_label(node)}: auto_pad/ceil_mode need static spatial "
                            f"sizes of input {x.name}, got shape {shape}")
    return dims


def _insert_pad(graph: ir.Graph, node: ir.Node, value: float) -> ir.Value:
    """Insert ``Pad(x, value)`` before ``node`` and make ``node`` an unpadded MaxPool."""
    x = node.inputs[0]
    assert x is not None
    begin, end = _spatial_pads(node, x)
    rank = len(begin)
    pads = _constant(np.array([0, 0, *begin, 0, 0, *end], np.int64))
    new_nodes = [pads]
    inputs = [x, pads.outputs[0]]
    if value != 0.0:
        # A zero pad value stays implicit: onnx2tf then emits TFLite PAD, which XNNPACK
        # delegates, instead of PADV2, which it does not.
        fill = _constant(np.array(value, np.float32))
        new_nodes.append(fill)
        inputs.append(fill.outputs[0])
    pad = ir.node("Pad", inputs, {"mode": "constant"})
    new_nodes.append(pad)
    out = pad.outputs[0]
    if x.dtype is not None:
        out.dtype = x.dtype
    if x.shape is not None and len(x.shape) == rank + 2:
        dims = list(x.shape)
        spatial = [d + b + e if isinstance(d, int) else None for d, b, e in zip(dims[2:], begin, end,
                                                                                  strict=True)]
        out.shape = ir.Shape([*dims[:2], *spatial])
    graph.insert_before(node, new_nodes)
    node.replace_input_with(0, out)
    node.attributes["pads"] = ir.AttrInt64s("pads", [0] * (2 * rank))
    node.attributes["auto_pad"] = ir.AttrString("auto_pad", "NOTSET")
    node.attributes["ceil_mode"] = ir.AttrInt64("ceil_mode", 0)
    return out


def _constant(array: np.ndarray) -> ir.Node:
    """A Constant node whose output carries its type and shape.

    onnx2tf reads the shapes of a node's inputs; without them it lowered a Pad on a square
    16x16x16 tensor through an extra TRANSPOSE.
    """
    node = ir.node("Constant", [], {"value": ir.tensor(array)})
    node.outputs[0].dtype = ir.DataType.from_numpy(array.dtype)
    node.outputs[0].shape = ir.Shape(array.shape)
    return node
