"""DepthToSpace and SpaceToDepth as Reshape, Transpose, Reshape.

onnx2tf decides each tensor's layout by heuristics, and a DepthToSpace between the Transposes
of a graph converted from NHWC (a MediaPipe .tflite through tf2onnx) reaches TensorFlow's
NHWC kernel with an NCHW tensor ("Dimension size must be evenly divisible by 4 but is 14").
Spelled out as a 6-D reshape, a transpose and a reshape, it has no layout to guess.
Needs static shapes (the mobile targets fix them first); other nodes are left and listed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from irq.ir.edit import Namer, add_initializer, new_node, replace_value
from irq.ir.model import QModel, node_label
from irq.pipeline.infra import Pass, PassResult


def _plan(node: ir.Node, n: int, c: int, h: int, w: int, b: int) -> tuple[list[int], list[int], list[int]]:
    """(first shape, permutation, final shape) of the spelled-out op."""
    if node.op_type == "DepthToSpace":
        final = [n, c // (b * b), h * b, w * b]
        if node.attributes.get_string("mode", "DCR") == "CRD":
            return [n, c // (b * b), b, b, h, w], [0, 1, 4, 2, 5, 3], final
        return [n, b, b, c // (b * b), h, w], [0, 3, 4, 1, 5, 2], final
    return [n, c, h // b, b, w // b, b], [0, 3, 5, 1, 2, 4], [n, c * b * b, h // b, w // b]


@dataclass(frozen=True)
class DecomposeDepthToSpace(Pass):
    """Replace each DepthToSpace/SpaceToDepth with static shapes by Reshape-Transpose-Reshape."""

    name = "decompose-depth-to-space"

    def run(self, qmodel: QModel) -> PassResult:
        """Rewrite every eligible node."""
        graph, namer = qmodel.graph, Namer(qmodel.graph)
        done, kept = [], {}
        for node in [n for n in graph if n.op_type in ("DepthToSpace", "SpaceToDepth") and n.domain == ""]:
            x = node.inputs[0]
            shape = list(x.shape) if x is not None and x.shape is not None else []
            if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape):
                kept[node_label(node)] = "its input shape is not static"
                continue
            b = node.attributes.get_int("blocksize", 0)
            n, c, h, w = (int(d) for d in shape)  # type: ignore[arg-type]  # checked static above
            first, perm, final = _plan(node, n, c, h, w, b)
            base = node_label(node).replace(":", "_")
            r1 = new_node(namer, "Reshape", [x, add_initializer(graph, namer, np.array(first, np.int64), f"{base}_6d")],
                          f"{base}_split")
            t = new_node(namer, "Transpose", [r1.outputs[0]], f"{base}_moved", attributes={"perm": perm})
            r2 = new_node(namer, "Reshape", [t.outputs[0], add_initializer(graph, namer, np.array(final, np.int64),
                                                                           f"{base}_4d")], f"{base}_merged")
            r2.outputs[0].type, r2.outputs[0].shape = node.outputs[0].type, ir.Shape(final)
            graph.insert_before(node, [r1, t, r2])
            replace_value(node.outputs[0], r2.outputs[0])
            graph.remove(node, safe=True)
            done.append(node_label(node))
        qmodel.analysis.record(self.name, decomposed=done, kept=kept)
        return PassResult(qmodel, bool(done))
