"""Shape inference: fill in value types and shapes with ONNX's inference (data propagation on)."""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir
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
        _sync_constant_shapes(qmodel.graph)
        declared = {i: v.shape for i, v in enumerate(qmodel.graph.outputs) if v.producer() is not None}
        for i in declared:
            qmodel.graph.outputs[i].shape = None
        result = ShapeInferencePass(strict_mode=self.strict)(qmodel.model)
        qmodel.model = result.model
        corrected = _merge_declared(qmodel.graph, declared)
        if corrected:
            qmodel.analysis.record(self.name, corrected_output_shapes=corrected)
        # onnx-ir's pass says "modified" whenever it ran; a fixpoint needs to know if anything was learnt
        return PassResult(qmodel, _typing(qmodel) != before)


def _sync_constant_shapes(graph: ir.Graph) -> None:
    """Give every initializer the shape and type of the tensor it holds.

    A folded value becomes an initializer but keeps the shape it was declared with (MiniLM's
    position embeddings stay ``[unk__0, unk__1, 384]`` as a ``[1, 24, 384]`` constant); inference
    trusts the declaration, so every shape below it stays symbolic and no shape subgraph folds.
    """
    for value in graph.initializers.values():
        tensor = value.const_value
        if tensor is not None:
            value.shape = ir.Shape(tensor.shape.numpy())
            value.dtype = tensor.dtype


def _merge_declared(graph: ir.Graph, declared: dict[int, ir.Shape | None]) -> dict[str, str]:
    """Put back each output's declared shape, except where inference proves it wrong.

    Exporters write output shapes that the graph does not compute (ddddocr's recogniser declares
    ``[1, N]`` for a ``[T, 1, 8210]`` output); a backend that maps outputs by shape then fails.
    Outputs are inferred from their producers; a declared dimension fills in only where the
    inferred one is unknown, and a declared rank or size that inference contradicts is dropped.
    """
    corrected = {}
    for i, old in declared.items():
        value = graph.outputs[i]
        new = value.shape
        if old is None:
            continue
        if new is None:
            value.shape = old
            continue
        if len(new) != len(old):
            corrected[value.name or f"output {i}"] = f"declared {list(old)}, computed {list(new)}"
            continue
        dims = [_dim(n, o) for n, o in zip(new, old, strict=True)]
        conflicts = [j for j, (n, o) in enumerate(zip(new, old, strict=True))
                     if isinstance(n, int) and isinstance(o, int) and n != o]
        if conflicts:
            corrected[value.name or f"output {i}"] = f"declared {list(old)}, computed {list(new)}"
        value.shape = ir.Shape(dims)
    return corrected


def _dim(inferred: int | ir.SymbolicDim, declared: int | ir.SymbolicDim) -> int | ir.SymbolicDim:
    """An inferred static size, else a declared static size, else the declared name if it has one."""
    if isinstance(inferred, int):
        return inferred
    if isinstance(declared, int) or getattr(declared, "value", None) is not None:
        return declared
    return inferred


def _typing(qmodel: QModel) -> dict[str, tuple[str, str]]:
    """Every named value's type and shape in the main graph, as text."""
    graph = qmodel.graph
    values = [*graph.inputs, *(o for node in graph for o in node.outputs)]
    return {v.name: (str(v.type), str(v.shape)) for v in values if v.name}
