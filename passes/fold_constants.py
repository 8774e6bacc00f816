"""Constant folding: evaluate subgraphs whose inputs are all constants (onnxscript's folder)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import onnxscript.optimizer

from irq.ir.model import QModel
from irq.pipeline.infra import Pass, PassResult

#: ConstantOfShape results up to this many elements are folded (onnxscript keeps every one, to
#: keep files small; small ones are shape arithmetic, e.g. pads computed from zeros, that must fold).
SMALL_CONSTANT_OF_SHAPE = 1 << 12


def _should_fold(node: ir.Node) -> bool | None:
    # Folding DequantizeLinear on a weight would silently turn int8 weights back into float.
    if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        return False
    if node.op_type == "ConstantOfShape" and node.inputs and node.inputs[0] is not None:
        shape = node.inputs[0].const_value
        if shape is not None and int(np.prod(shape.numpy())) <= SMALL_CONSTANT_OF_SHAPE:
            return True
    return None


@dataclass(frozen=True)
class FoldConstants(Pass):
    """Fold constant subgraphs (Shape->Gather->Unsqueeze chains, constant reshapes, ...).

    Folding makes weights visible as initializers, which Q/DQ insertion and every backend need.
    """

    name = "fold-constants"
    #: Largest tensor (in elements) the folder may create; bigger results stay as nodes.
    output_size_limit: int = 1 << 22
    #: Leave If/Loop bodies alone (their shapes may describe inputs a branch is never taken for).
    main_graph_only: bool = True

    def run(self, qmodel: QModel) -> PassResult:
        """Fold in place."""
        main = qmodel.graph

        def should_fold(node: ir.Node) -> bool | None:
            if self.main_graph_only and node.graph is not main:
                return False
            return _should_fold(node)

        result = onnxscript.optimizer.fold_constants(
            qmodel.model, onnx_shape_inference=False, input_size_limit=self.output_size_limit,
            output_size_limit=self.output_size_limit, should_fold=should_fold)
        return PassResult(qmodel, bool(result.modified))
