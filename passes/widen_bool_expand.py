"""Expand of a boolean tensor as Cast -> Expand -> Cast through int32.

onnx2tf lowers Expand as a multiplication by ones, which TensorFlow has no kernel for on bool
("Value passed to parameter 'x' has DataType bool": a transformer's expanded attention mask,
all-MiniLM-L6-v2). On int32 the same Expand converts, and the casts around it are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from irq.ir.edit import Namer, new_node, replace_value
from irq.ir.model import QModel, node_label
from irq.pipeline.infra import Pass, PassResult


@dataclass(frozen=True)
class WidenBoolExpand(Pass):
    """Run every boolean Expand on int32."""

    name = "widen-bool-expand"

    def run(self, qmodel: QModel) -> PassResult:
        """Wrap each Expand whose input is bool in two Casts."""
        graph, namer = qmodel.graph, Namer(qmodel.graph)
        done = []
        for node in [n for n in graph if n.op_type == "Expand" and n.domain in ("", "ai.onnx")]:
            x = node.inputs[0]
            if x is None or x.dtype != ir.DataType.BOOL:
                continue
            base = (node.outputs[0].name or "expand").replace(":", "_")
            widened = new_node(namer, "Cast", [x], f"{base}_int32", attributes={"to": ir.DataType.INT32})
            widened.outputs[0].dtype, widened.outputs[0].shape = ir.DataType.INT32, x.shape
            expand = new_node(namer, "Expand", [widened.outputs[0], node.inputs[1]], f"{base}_expanded")
            expand.outputs[0].dtype, expand.outputs[0].shape = ir.DataType.INT32, node.outputs[0].shape
            back = new_node(namer, "Cast", [expand.outputs[0]], f"{base}_bool", attributes={"to": ir.DataType.BOOL})
            back.outputs[0].dtype, back.outputs[0].shape = ir.DataType.BOOL, node.outputs[0].shape
            graph.insert_before(node, [widened, expand, back])
            replace_value(node.outputs[0], back.outputs[0])
            graph.remove(node, safe=True)
            done.append(node_label(node))
        if done:
            qmodel.analysis.record(self.name, widened=done)
        return PassResult(qmodel, bool(done))
