"""Pre-quantized models back to float, so that every target quantizes them its own way.

Models in the wild often ship already quantized: onnxruntime's dynamic quantization
(``DynamicQuantizeLinear`` feeding ``ConvInteger``/``MatMulInteger``, then a Cast and a Mul by
the two scales; ``DynamicQuantizeLSTM``) or a QDQ export. No mobile converter lowers those ops,
and quantizing on top of them stacks two roundings. This pass rewrites what it recognises into
the float ops they approximate, with the weights dequantized (``(q - zero_point) * scale``, so
the integer grid is kept exactly and re-quantizing the weights at 8 bits loses nothing):

- ``DequantizeLinear`` of constants becomes a float constant;
- a ``QuantizeLinear`` -> ``DequantizeLinear`` pair on an activation is dropped (the float value
  flows through);
- the dynamic chain ``ConvInteger``/``MatMulInteger`` [+ int32 bias] -> Cast -> Mul(x_scale *
  w_scale) becomes one ``Conv``/``MatMul`` on the float input (the int32 bias, when it is the
  float bias divided by the scales at run time, becomes that float bias);
- ``DynamicQuantizeLSTM`` becomes ``LSTM`` with dequantized, re-laid-out W and R.

What it cannot match stays, is listed in the pass's record, and a backend that cannot lower it
names the node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from irq.ir.edit import Namer, add_initializer, new_node, replace_value
from irq.ir.model import QModel, constant_array, node_label, only_reader
from irq.pipeline.infra import Pass, PassResult

_QUANTIZED_OPS = ("DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "DynamicQuantizeLSTM", "QuantizeLinear",
                  "DequantizeLinear", "QLinearConv", "QLinearMatMul")


def _dequantized(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int | None) -> np.ndarray:
    """``(q - zero) * scale`` with per-axis ``scale``/``zero`` broadcast along ``axis``."""
    def along(a: np.ndarray) -> np.ndarray:
        if a.size == 1 or axis is None:
            return a.reshape(()) if a.size == 1 else a
        shape = [1] * q.ndim
        shape[axis] = a.size
        return a.reshape(shape)

    centred = q.astype(np.float64) - (along(zero.astype(np.float64)) if zero is not None else 0.0)
    return (centred * along(scale.astype(np.float64))).astype(np.float32)


def _other_input(node: ir.Node, value: ir.Value) -> ir.Value | None:
    """The input of a binary node that is not ``value``."""
    a, b = node.inputs[0], node.inputs[1]
    return b if a is value else a if b is value else None


def _scale_product(value: ir.Value | None, x_scale: ir.Value) -> np.ndarray | None:
    """The weight scale when ``value`` is ``Mul(x_scale, w_scale)`` (either order) with a constant w_scale."""
    producer = value.producer() if value is not None else None
    if producer is None or producer.op_type != "Mul" or len(producer.inputs) != 2:
        return None
    other = _other_input(producer, x_scale)
    return constant_array(other) if other is not None else None


def _float_bias(value: ir.Value | None, depth: int = 0) -> np.ndarray | None:
    """The float bias behind onnxruntime's run-time int32 bias: Reshape/Cast/Floor/Round of Div(b, scales)."""
    producer = value.producer() if value is not None else None
    if producer is None or depth > 6:
        return None
    if producer.op_type in ("Reshape", "Cast", "Floor", "Round", "Identity"):
        return _float_bias(producer.inputs[0], depth + 1)
    if producer.op_type == "Div":
        return constant_array(producer.inputs[0])
    return None


def _integer_op(node: ir.Node, graph: ir.Graph, namer: Namer) -> str | None:
    """Rewrite one ConvInteger/MatMulInteger chain; the reason when it is not the dynamic pattern."""
    quantize = node.inputs[0].producer() if node.inputs[0] is not None else None
    if quantize is None or quantize.op_type != "DynamicQuantizeLinear" or node.inputs[0] is not quantize.outputs[0]:
        return "its input is not from DynamicQuantizeLinear"
    if len(node.inputs) > 2 and node.inputs[2] is not None and node.inputs[2] is not quantize.outputs[2]:
        return "its input zero point is not the DynamicQuantizeLinear's"
    weight = constant_array(node.inputs[1])
    w_zero = constant_array(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
    if weight is None or (len(node.inputs) > 3 and node.inputs[3] is not None and w_zero is None):
        return "its weight is not constant"
    value, bias = node.outputs[0], None
    user = only_reader(value)
    if user is not None and user.op_type == "Add":
        bias = _float_bias(_other_input(user, value))
        if bias is None:
            return "its integer bias is not derived from a constant float bias"
        value, user = user.outputs[0], only_reader(user.outputs[0])
    if user is None or user.op_type != "Cast" or user.attributes.get_int("to", 0) != ir.DataType.FLOAT:
        return "its output is not cast to float"
    cast, mul = user, only_reader(user.outputs[0])
    if mul is None or mul.op_type != "Mul":
        return "its float output is not multiplied by the scales"
    w_scale = _scale_product(_other_input(mul, cast.outputs[0]), quantize.outputs[1])
    if w_scale is None:
        return "its scale is not x_scale times a constant weight scale"
    conv = node.op_type == "ConvInteger"
    w = _dequantized(weight, w_scale, w_zero, 0 if conv else weight.ndim - 1)
    base = mul.outputs[0].name or "dequantized"
    inputs = [quantize.inputs[0], add_initializer(graph, namer, w, f"{base}.weight")]
    if conv:
        if bias is not None:
            inputs.append(add_initializer(graph, namer, bias.astype(np.float32).reshape(-1), f"{base}.bias"))
        attrs = {a.name: a for a in node.attributes.values()}
        out = new_node(namer, "Conv", inputs, base)
        for attr in attrs.values():
            out.attributes[attr.name] = attr
        nodes = [out]
    else:
        out = new_node(namer, "MatMul", inputs, base)
        nodes = [out]
        if bias is not None:
            b = add_initializer(graph, namer, bias.astype(np.float32), f"{base}.bias")
            nodes.append(new_node(namer, "Add", [out.outputs[0], b], f"{base}_bias"))
    graph.insert_before(mul, nodes)
    replace_value(mul.outputs[0], nodes[-1].outputs[0])
    return None


def _lstm(node: ir.Node, graph: ir.Graph, namer: Namer) -> str | None:
    """DynamicQuantizeLSTM as LSTM: W, R dequantized per channel and laid out as [dirs, 4H, in]."""
    inputs = list(node.inputs) + [None] * (12 - len(node.inputs))
    arrays = [constant_array(v) for v in inputs[8:12]]
    w_q, r_q = constant_array(inputs[1]), constant_array(inputs[2])
    if w_q is None or r_q is None or any(a is None for a in arrays):
        return "its weights or their scales are not constant"
    w_scale, w_zero, r_scale, r_zero = arrays

    def weights(q: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
        # q: [dirs, in, 4H]; scale/zero: [dirs] or [dirs, 4H]
        shape = (q.shape[0], 1, -1 if scale.ndim == 2 else 1)
        centred = q.astype(np.float64) - zero.astype(np.float64).reshape(shape)
        return (centred * scale.astype(np.float64).reshape(shape)).astype(np.float32).transpose(0, 2, 1)

    base = node.outputs[0].name or "lstm"
    w = add_initializer(graph, namer, weights(w_q, w_scale, w_zero), f"{base}.W")  # type: ignore[arg-type]
    r = add_initializer(graph, namer, weights(r_q, r_scale, r_zero), f"{base}.R")  # type: ignore[arg-type]
    lstm = new_node(namer, "LSTM", [inputs[0], w, r, *inputs[3:8]], base, num_outputs=len(node.outputs))
    for attr in node.attributes.values():
        lstm.attributes[attr.name] = attr
    while lstm.inputs and lstm.inputs[-1] is None:
        lstm.resize_inputs(len(lstm.inputs) - 1)
    graph.insert_before(node, [lstm])
    for old, new in zip(node.outputs, lstm.outputs, strict=True):
        if old.uses() or old.is_graph_output():
            replace_value(old, new)
    graph.remove(node, safe=True)
    return None


def _constant_dequantize(node: ir.Node, graph: ir.Graph, namer: Namer) -> str | None:
    """DequantizeLinear of constants as one float constant."""
    q, scale = constant_array(node.inputs[0]), constant_array(node.inputs[1])
    zero = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    if q is None or scale is None or (len(node.inputs) > 2 and node.inputs[2] is not None and zero is None):
        return "its input is not constant"
    if node.attributes.get_int("block_size", 0):
        return "block-wise quantization"
    axis = node.attributes.get_int("axis", 1) % max(q.ndim, 1) if scale.size > 1 else None
    base = node.outputs[0].name or "weight"
    value = add_initializer(graph, namer, _dequantized(q, scale, zero, axis), f"{base}.float")
    replace_value(node.outputs[0], value)
    graph.remove(node, safe=True)
    return None


def _activation_pair(node: ir.Node, graph: ir.Graph) -> str | None:
    """QuantizeLinear -> DequantizeLinear on an activation: the DequantizeLinear's readers read the float input."""
    quantize = node.inputs[0].producer() if node.inputs[0] is not None else None
    if quantize is None or quantize.op_type != "QuantizeLinear" or quantize.inputs[0] is None:
        return "its input is not from QuantizeLinear"
    if quantize.inputs[0].dtype not in (ir.DataType.FLOAT, None):
        return "the quantized value is not float"
    replace_value(node.outputs[0], quantize.inputs[0])
    graph.remove(node, safe=True)
    if not quantize.outputs[0].uses() and not quantize.outputs[0].is_graph_output():
        graph.remove(quantize, safe=True)
    return None


_RULES = {"ConvInteger": _integer_op, "MatMulInteger": _integer_op, "DynamicQuantizeLSTM": _lstm}


@dataclass(frozen=True)
class Dequantize(Pass):
    """Rewrite onnxruntime's dynamic-quantization ops and Q/DQ pairs back into float ops."""

    name = "dequantize"

    def run(self, qmodel: QModel) -> PassResult:
        """Rewrite every recognised pattern; record what was rewritten and what stays quantized."""
        graph, namer = qmodel.graph, Namer(qmodel.graph)
        if not any(n.op_type in _QUANTIZED_OPS for n in graph):
            return PassResult(qmodel, False)
        done: list[str] = []
        kept: dict[str, str] = {}
        for node in list(graph):
            if node.domain not in ("", "com.microsoft"):
                continue
            if node.op_type == "DequantizeLinear":
                constant = constant_array(node.inputs[0]) is not None
                why = _constant_dequantize(node, graph, namer) if constant else _activation_pair(node, graph)
            elif node.op_type in _RULES:
                why = _RULES[node.op_type](node, graph, namer)
            else:
                continue
            if why is None:
                done.append(f"{node_label(node)} ({node.op_type})")
            else:
                kept[f"{node_label(node)} ({node.op_type})"] = why
        _remove_dead(graph)
        for node in graph:
            if node.op_type in _QUANTIZED_OPS:
                kept.setdefault(f"{node_label(node)} ({node.op_type})", "no float rewrite for this pattern")
        qmodel.analysis.record(self.name, dequantized=done, kept=kept)
        return PassResult(qmodel, bool(done))


def _remove_dead(graph: ir.Graph) -> None:
    """Drop nodes whose outputs nothing reads (the quantization chains the rewrites bypassed)."""
    changed = True
    while changed:
        changed = False
        for node in reversed(list(graph)):
            if all(not out.uses() and not out.is_graph_output() for out in node.outputs):
                graph.remove(node, safe=True)
                changed = True
    for name, value in list(graph.initializers.items()):
        if not value.uses() and not value.is_graph_output():
            del graph.initializers[name]
