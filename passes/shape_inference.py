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
        result = ShapeInferencePass(strict_mode=self.strict)(qmodel.model)
        qmodel.model = result.model
        return PassResult(qmodel, result.modified)
