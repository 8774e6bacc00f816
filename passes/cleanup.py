"""Clean-up: drop identities and dead nodes, lift constants, deduplicate and sort."""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir
from onnx_ir.passes.common import (
    DeduplicateInitializersPass,
    IdentityEliminationPass,
    LiftConstantsToInitializersPass,
    RemoveUnusedNodesPass,
    TopologicalSortPass,
)

from irq.ir.model import QModel
from irq.pipeline.infra import Pass, PassResult


class _ScopedIdentityElimination(IdentityEliminationPass):
    """onnx-ir's identity elimination, minus the case it gets wrong in If/Loop bodies.

    An Identity that makes a value of an enclosing graph (or another graph's output) a
    subgraph's output must stay: a value can only be an output of the graph that owns it. So
    does one whose input and output disagree on rank, which onnx-ir would raise on.
    """

    def _try_eliminate_identity_node(self, node: ir.Node) -> bool:
        x, y = (node.inputs[0] if node.inputs else None), (node.outputs[0] if node.outputs else None)
        if node.op_type == "Identity" and x is not None and y is not None and y.is_graph_output():
            producer = x.producer()
            if producer is None or producer.graph is not node.graph or x.is_graph_output():
                return False
        if (node.op_type == "Identity" and x is not None and y is not None and x.shape is not None
                and y.shape is not None and len(x.shape) != len(y.shape)):
            return False  # inferred shapes disagree (an If branch never taken for these inputs): leave it
        return super()._try_eliminate_identity_node(node)


@dataclass(frozen=True)
class Cleanup(Pass):
    """Leave a graph whose weights are initializers and whose nodes are all live and sorted."""

    name = "cleanup"

    def run(self, qmodel: QModel) -> PassResult:
        """Run onnx-ir's clean-up passes in a fixed order."""
        modified = False
        for p in (_ScopedIdentityElimination(), LiftConstantsToInitializersPass(lift_all_constants=True,
                                                                            size_limit=0),
                  RemoveUnusedNodesPass(), DeduplicateInitializersPass(), TopologicalSortPass()):
            result = p(qmodel.model)
            qmodel.model = result.model
            modified |= result.modified
        return PassResult(qmodel, modified)
