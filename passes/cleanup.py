"""Clean-up: drop identities and dead nodes, lift constants, deduplicate and sort."""

from __future__ import annotations

from dataclasses import dataclass

from onnx_ir.passes.common import (
    DeduplicateInitializersPass,
    IdentityEliminationPass,
    LiftConstantsToInitializersPass,
    RemoveUnusedNodesPass,
    TopologicalSortPass,
)

from irq.ir import QModel
from irq.pass_infra import Pass, PassResult


@dataclass(frozen=True)
class Cleanup(Pass):
    """Leave a graph whose weights are initializers and whose nodes are all live and sorted."""

    name = "cleanup"

    def run(self, qmodel: QModel) -> PassResult:
        """Run onnx-ir's clean-up passes in a fixed order."""
        modified = False
        for p in (IdentityEliminationPass(), LiftConstantsToInitializersPass(lift_all_constants=True,
                                                                            size_limit=0),
                  RemoveUnusedNodesPass(), DeduplicateInitializersPass(), TopologicalSortPass()):
            result = p(qmodel.model)
            qmodel.model = result.model
            modified |= result.modified
        return PassResult(qmodel, modified)
