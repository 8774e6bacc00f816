"""Dynamic quantization: int8 weights, activations quantized at run time (transformers, RNNs).

- MatMul/Gemm with a constant weight: DynamicQuantizeLinear on the input, MatMulInteger
  against per-column int8 weights, then one float rescale; onnxruntime fuses the pattern into
  DynamicQuantizeMatMul.
- LSTM/GRU: int8 per-channel weights read through DequantizeLinear (int8 storage, float math).
- Gather on a large constant table (embeddings): the int8 rows are gathered first and only
  those rows are rescaled, so the table never exists in float at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from irq.ir.edit import Namer, add_initializer, new_node, replace_value
from irq.ir.model import QModel, constant_array, node_label
from irq.pipeline.infra import Pass, PassResult
from irq.quant.arith import quantize_weight
from irq.quant.recurrent import RECURRENT_OPS, int8_recurrent_weights
from irq.quant.spec import Precision, QType
from irq.quant.weight_range import range_decision, weight_qtype


@dataclass(frozen=True)
class QuantizeDynamic(Pass):
    """Rewrite the nodes the plan marks dynamic-int8."""

    name = "quantize-dynamic"
    keeps_plan = True

    def requires(self, qmodel: QModel) -> list[str]:
        """A current precision plan."""
        return qmodel.plan_problems()

    def run(self, qmodel: QModel) -> PassResult:
        """Rewrite in place; returns how many nodes changed in the analysis."""
        graph, namer = qmodel.graph, Namer(qmodel.graph)
        counts = {"matmul": 0, "recurrent": 0, "gather": 0}
        for node in list(graph):
            d = qmodel.plan.get(node_label(node))
            if d is None or d.precision != Precision.DYNAMIC_INT8:
                continue
            per_channel = d.per_channel
            qtype = weight_qtype(node, qmodel.scheme)
            if node.op_type in ("MatMul", "Gemm") and _rewrite_matmul(graph, namer, node, per_channel, qtype):
                counts["matmul"] += 1
            elif node.op_type in RECURRENT_OPS and int8_recurrent_weights(graph, namer, node):
                counts["recurrent"] += 1
            elif node.op_type == "Gather" and _rewrite_gather(graph, namer, node):
                counts["gather"] += 1
        if any(counts.values()):
            RemoveUnusedNodesPass()(qmodel.model)
        qmodel.analysis.record(self.name, rewritten=counts, weights=range_decision(qmodel.scheme))
        return PassResult(qmodel, any(counts.values()))


def _matmul_weight(node: ir.Node) -> np.ndarray | None:
    """W[K, N] such that the node computes x @ W (+ bias), or None if it is not that simple."""
    w = constant_array(node.inputs[1])
    if w is None or w.dtype != np.float32 or w.ndim != 2:
        return None
    if node.op_type == "Gemm":
        a = node.attributes
        if a.get_int("transA", 0) or a.get_float("alpha", 1.0) != 1.0:
            return None
        if a.get_int("transB", 0):
            w = w.T
    return np.ascontiguousarray(w)


def _rewrite_matmul(graph: ir.Graph, namer: Namer, node: ir.Node, per_channel: bool, qtype: QType) -> bool:
    w = _matmul_weight(node)
    if w is None:
        return False
    bias = None
    if node.op_type == "Gemm" and len(node.inputs) > 2 and node.inputs[2] is not None:
        bias = constant_array(node.inputs[2])
        if bias is None:
            return False
        bias = bias * node.attributes.get_float("beta", 1.0)
    base = node_label(node).replace(":", "_")
    w_q, scales = quantize_weight(w, 1 if per_channel else None, qtype)
    dql = new_node(namer, "DynamicQuantizeLinear", [node.inputs[0]], f"{base}_xq", num_outputs=3)
    w_v = add_initializer(graph, namer, w_q, f"{base}_weight_int8")
    mmi = new_node(namer, "MatMulInteger", [dql.outputs[0], w_v, dql.outputs[2]], f"{base}_int32")
    cast = new_node(namer, "Cast", [mmi.outputs[0]], f"{base}_float", attributes={"to": ir.DataType.FLOAT})
    s_v = add_initializer(graph, namer, scales.reshape(-1), f"{base}_weight_scale")
    scale = new_node(namer, "Mul", [dql.outputs[1], s_v], f"{base}_scale")
    out = new_node(namer, "Mul", [cast.outputs[0], scale.outputs[0]], f"{base}_rescaled")
    nodes = [dql, mmi, cast, scale, out]
    if bias is not None:
        b_v = add_initializer(graph, namer, bias.astype(np.float32), f"{base}_bias")
        nodes.append(new_node(namer, "Add", [out.outputs[0], b_v], f"{base}_biased"))
    final = nodes[-1].outputs[0]
    final.dtype, final.shape = ir.DataType.FLOAT, node.outputs[0].shape
    graph.insert_before(node, nodes)
    replace_value(node.outputs[0], final)
    graph.remove(node, safe=True)
    return True


def _rewrite_gather(graph: ir.Graph, namer: Namer, node: ir.Node) -> bool:
    table = constant_array(node.inputs[0])
    if table is None or table.dtype != np.float32 or table.ndim != 2 or node.attributes.get_int("axis", 0) != 0:
        return False
    base = node_label(node).replace(":", "_")
    q, scales = quantize_weight(table, 0)
    q_v = add_initializer(graph, namer, q, f"{base}_table_int8")
    s_v = add_initializer(graph, namer, scales.reshape(-1, 1), f"{base}_row_scale")
    idx = node.inputs[1]
    rows = new_node(namer, "Gather", [q_v, idx], f"{base}_rows_int8")
    rows_scale = new_node(namer, "Gather", [s_v, idx], f"{base}_rows_scale")
    cast = new_node(namer, "Cast", [rows.outputs[0]], f"{base}_rows_float", attributes={"to": ir.DataType.FLOAT})
    out = new_node(namer, "Mul", [cast.outputs[0], rows_scale.outputs[0]], f"{base}_rows")
    out.outputs[0].dtype, out.outputs[0].shape = ir.DataType.FLOAT, node.outputs[0].shape
    graph.insert_before(node, [rows, rows_scale, cast, out])
    replace_value(node.outputs[0], out.outputs[0])
    graph.remove(node, safe=True)
    return True
