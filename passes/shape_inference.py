"""Shape inference: fill in value types and shapes with ONNX's inference (data propagation on)."""

from __future__ import annotations

from dataclasses import dataclass

from onnx_ir.passes.common import ShapeInferencePass

from irq.ir.model import QModel
from irq.pipeline.infra import Pass, PassResult


@dataclass(frozen=True)
class ShapeInference(Pass):
    """Infer the type and shape of every value; later passes rely on dtypes being known."""

    name = "shape-inference"
    strict: bool = False

    def run(self, qmodel: QModel) -> PassResult:
        """Run ONNX shape inference over the main graph."""
        before = _typing(qmodel)
        result = ShapeInferencePass(strict_mode=self.strict)(qmodel.model)
        qmodel.model = result.model
        # onnx-ir's pass says "modified" whenever it ran; a fixpoint needs to know if anything was learnt
        return PassResult(qmodel, _typing(qmodel) != before)


def _typing(qmodel: QModel) -> dict[str, tuple[str, str]]:
    """Every named value's type and shape in the main graph, as text."""
    graph = qmodel.graph
    values = [*graph.inputs, *(o for node in graph for o in node.outputs)]
    return {v.name: (str(v.type), str(v.shape)) for v in values if v.name}
