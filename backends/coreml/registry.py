"""The op-lowering registry: ONNX op type -> function that emits the MIL ops for one node.

Each ``ops_*`` module registers its lowerings here with :func:`lowers`; the driver looks a node
up by op type and calls ``fn(ctx, node)``, which returns the node's output value (or a list
of them, one per ONNX output): a MIL ``Var``, a numpy constant or a quantized weight.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx_ir as ir

    from irq.backends.coreml.context import LoweringContext

Lowering = Callable[["LoweringContext", "ir.Node"], Any]

LOWERINGS: dict[str, Lowering] = {}


def lowers(*op_types: str) -> Callable[[Lowering], Lowering]:
    """Register the decorated function as the lowering of ``op_types`` (duplicates are errors)."""

    def register(fn: Lowering) -> Lowering:
        for op_type in op_types:
            if op_type in LOWERINGS:
                raise ValueError(f"ONNX op {op_type} already has a Core ML lowering "
                                 f"({LOWERINGS[op_type].__qualname__})")
            LOWERINGS[op_type] = fn
        return fn

    return register
