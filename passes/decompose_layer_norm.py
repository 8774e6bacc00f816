"""LayerNormalization spelled out as ReduceMean, Sub, Mul, Add, Sqrt and Div.

onnx2tf lowers ONNX's LayerNormalization to a Keras LayerNormalization whose gamma it builds
from the ONNX scale on the axis it guessed after its layout change; on a transformer's
[1, 128, 384] activations it guesses wrong and fails ("Eager execution of tf.constant with
unsupported shape", all-MiniLM-L6-v2). The primitive ops have no parameters to misplace.
Each rewritten node is recorded; one whose axis or inputs are not understood is left and listed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from irq.ir.edit import Namer, add_initializer, new_node, replace_value
from irq.ir.model import QModel, node_label
from irq.pipeline.infra import Pass, PassResult


def _mean(namer: Namer, graph: ir.Graph, x: ir.Value, axes: list[int], opset: int, base: str) -> ir.Node:
    """ReduceMean over ``axes`` keeping them (axes are an input from opset 18, an attribute before)."""
    if opset >= 18:
        return new_node(namer, "ReduceMean", [x, add_initializer(graph, namer, np.array(axes, np.int64),
                                                                 f"{base}_axes")], base, attributes={"keepdims": 1})
    return new_node(namer, "ReduceMean", [x], base, attributes={"axes": axes, "keepdims": 1})


def _spelled_out(node: ir.Node, graph: ir.Graph, namer: Namer, opset: int) -> list[ir.Node] | None:
    """The replacement nodes, or None when the node's rank is unknown or it returns its statistics."""
    x = node.inputs[0]
    if x is None or x.shape is None or any(out.uses() or out.is_graph_output() for out in node.outputs[1:]):
        return None
    rank = len(x.shape)
    axis = node.attributes.get_int("axis", -1) % rank
    axes = list(range(axis, rank))
    eps = node.attributes.get_float("epsilon", 1e-5)
    base = (node.outputs[0].name or "layer_norm").replace(":", "_")
    mean = _mean(namer, graph, x, axes, opset, f"{base}_mean")
    centred = new_node(namer, "Sub", [x, mean.outputs[0]], f"{base}_centred")
    square = new_node(namer, "Mul", [centred.outputs[0], centred.outputs[0]], f"{base}_square")
    var = _mean(namer, graph, square.outputs[0], axes, opset, f"{base}_var")
    eps_v = add_initializer(graph, namer, np.array(eps, np.float32), f"{base}_eps")
    shifted = new_node(namer, "Add", [var.outputs[0], eps_v], f"{base}_var_eps")
    std = new_node(namer, "Sqrt", [shifted.outputs[0]], f"{base}_std")
    normed = new_node(namer, "Div", [centred.outputs[0], std.outputs[0]], f"{base}_normed")
    nodes = [mean, centred, square, var, shifted, std, normed]
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        nodes.append(new_node(namer, "Mul", [nodes[-1].outputs[0], node.inputs[1]], f"{base}_scaled"))
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        nodes.append(new_node(namer, "Add", [nodes[-1].outputs[0], node.inputs[2]], f"{base}_shifted"))
    out = nodes[-1].outputs[0]
    out.type, out.shape = node.outputs[0].type, node.outputs[0].shape
    return nodes


@dataclass(frozen=True)
class DecomposeLayerNorm(Pass):
    """Replace each LayerNormalization of known rank by its arithmetic."""

    name = "decompose-layer-norm"

    def run(self, qmodel: QModel) -> PassResult:
        """Rewrite every eligible node of the main graph."""
        graph, namer = qmodel.graph, Namer(qmodel.graph)
        opset = qmodel.model.opset_imports.get("", 17)
        done, kept = [], {}
        for node in [n for n in graph if n.op_type == "LayerNormalization" and n.domain in ("", "ai.onnx")]:
            nodes = _spelled_out(node, graph, namer, opset)
            if nodes is None:
                kept[node_label(node)] = "its input rank is unknown or its mean/variance outputs are read"
                continue
            graph.insert_before(node, nodes)
            replace_value(node.outputs[0], nodes[-1].outputs[0])
            graph.remove(node, safe=True)
            done.append(node_label(node))
        if done or kept:
            qmodel.analysis.record(self.name, decomposed=done, kept=kept)
        return PassResult(qmodel, bool(done))
