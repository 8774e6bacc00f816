"""Erf as tanh(a*u + b*u^3), the tanh form of GELU, for runtimes without an Erf kernel.

TFLite has no builtin Erf (a transformer's exact GELU, all-MiniLM-L6-v2); without this pass
such a model cannot be lowered at all. erf(u) ~ tanh(2/sqrt(pi) * (u + 0.044715 * 2 * u^3)) is
the approximation GELU's tanh form makes, within 3.6e-4 of erf everywhere. Recorded per node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from irq.ir.edit import Namer, add_initializer, new_node, replace_value
from irq.ir.model import QModel, node_label
from irq.pipeline.infra import Pass, PassResult

_LINEAR = 2.0 / np.sqrt(np.pi)
_CUBIC = _LINEAR * 0.044715 * 2.0


@dataclass(frozen=True)
class ApproximateErf(Pass):
    """Replace each float Erf by its tanh approximation."""

    name = "approximate-erf"

    def run(self, qmodel: QModel) -> PassResult:
        """Rewrite every Erf of the main graph."""
        graph, namer = qmodel.graph, Namer(qmodel.graph)
        done = []
        for node in [n for n in graph if n.op_type == "Erf" and n.domain in ("", "ai.onnx")]:
            u = node.inputs[0]
            if u is None or u.dtype not in (ir.DataType.FLOAT, None):
                continue
            base = (node.outputs[0].name or "erf").replace(":", "_")
            linear = add_initializer(graph, namer, np.array(_LINEAR, np.float32), f"{base}_linear")
            cubic = add_initializer(graph, namer, np.array(_CUBIC, np.float32), f"{base}_cubic")
            square = new_node(namer, "Mul", [u, u], f"{base}_square")
            scaled = new_node(namer, "Mul", [square.outputs[0], cubic], f"{base}_cubic_term")
            slope = new_node(namer, "Add", [scaled.outputs[0], linear], f"{base}_slope")
            arg = new_node(namer, "Mul", [slope.outputs[0], u], f"{base}_arg")
            tanh = new_node(namer, "Tanh", [arg.outputs[0]], f"{base}_tanh")
            tanh.outputs[0].type, tanh.outputs[0].shape = node.outputs[0].type, node.outputs[0].shape
            graph.insert_before(node, [square, scaled, slope, arg, tanh])
            replace_value(node.outputs[0], tanh.outputs[0])
            graph.remove(node, safe=True)
            done.append(node_label(node))
        if done:
            qmodel.analysis.record(self.name, approximated=done, max_abs_error=3.6e-4)
        return PassResult(qmodel, bool(done))
