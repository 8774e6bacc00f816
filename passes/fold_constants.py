"""Constant folding: evaluate subgraphs whose inputs are all constants (onnxscript's folder)."""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir
import onnxscript.optimizer

from irq.ir import QModel
from irq.pass_infra import Pass, PassResult


def _keep_quantization_nodes(node: ir.Node) -> bool | None:
    # Folding DequantizeLinear on a weight would silently turn int8 weights back into float.
    return False if node.op_type in ("QuantizeLinear", "DequantizeLinear") else None


@dataclass(frozen=True)
class FoldConstants(Pass):
    """Fold constant subgraphs (Shape->Gather->Unsqueeze chains, constant reshapes, ...).

    Folding makes weights visible as initializers, which Q/DQ insertion and every backend need.
    """

    name = "fold-constants"
    #: Largest tensor (in elements) the folder may create; bigger results stay as nodes.
    output_size_limit: int = 1 << 22

    def run(self, qmodel: QModel) -> PassResult:
        """Fold in place."""
        result = onnxscript.optimizer.fold_constants(
            qmodel.model, onnx_shape_inference=False, input_size_limit=self.output_size_limit,
            output_size_limit=self.output_size_limit, should_fold=_keep_quantization_nodes)
        return PassResult(qmodel, bool(result.modified))
