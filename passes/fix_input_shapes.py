"""Fix the graph inputs' symbolic dimensions, so shape subgraphs can fold before a backend sees them.

Mobile runtimes want static shapes, and converters trip over shape arithmetic on dynamic ones
(onnx2tf: "Dimensions must be equal, but are 2 and 4" on a YOLO head exported with dynamic H/W).
This pass writes the given shapes onto the inputs, forgets every intermediate and output shape
(exporters sometimes declare outputs wrongly), then alternates shape inference and constant
folding until nothing more folds: Shape, Gather, Concat and Reshape chains on the now-static
sizes become constants, and each round's folded constants give the next round more shapes.

Option ``shapes``: ``name:1x3x320x320|other:2x1x128`` (``|`` between inputs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import onnx_ir as ir

from irq.errors import InputError
from irq.ir.model import QModel
from irq.pipeline.infra import Pass, PassResult


def parse_shapes(specs: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """``("x:1x3x224x224", ...)`` -> ``{"x": (1, 3, 224, 224)}`` (a scalar is ``name:``)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        name, sep, dims = spec.rpartition(":")
        if not sep or not name:
            raise ValueError(f"input shape {spec!r} must look like name:1x3x224x224")
        try:
            shapes[name] = tuple(int(d) for d in dims.split("x")) if dims else ()
        except ValueError:
            raise ValueError(f"input shape {spec!r}: dimensions must be integers joined by 'x'") from None
        if any(d < 1 for d in shapes[name]):
            raise ValueError(f"input shape {spec!r}: dimensions must be at least 1")
    return shapes


def format_shapes(shapes: dict[str, tuple[int, ...]]) -> tuple[str, ...]:
    """The inverse of :func:`parse_shapes`."""
    return tuple(f"{name}:{'x'.join(str(d) for d in dims)}" for name, dims in shapes.items())


def named_inputs(qmodel: QModel, wanted: Iterable[str]) -> dict[str, ir.Value]:
    """The graph inputs by name; InputError names any of ``wanted`` the model does not have."""
    inputs = {v.name or "": v for v in qmodel.graph.inputs}
    unknown = sorted(set(wanted) - set(inputs))
    if unknown:
        raise InputError(f"model {qmodel.name!r} has no input {', '.join(unknown)} "
                         f"(inputs: {', '.join(str(n) for n in inputs)})")
    return inputs


@dataclass(frozen=True)
class FixInputShapes(Pass):
    """Give graph inputs fixed shapes; intermediate shapes are re-inferred by the passes after it."""

    name = "fix-input-shapes"
    shapes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        parse_shapes(self.shapes)

    def run(self, qmodel: QModel) -> PassResult:
        """Set the shapes; InputError names an input that does not exist or does not fit."""
        wanted = parse_shapes(self.shapes)
        graph = qmodel.graph
        inputs = named_inputs(qmodel, wanted)
        changed = False
        for name, dims in wanted.items():
            value = inputs[name]
            old = list(value.shape) if value.shape is not None else None
            if old is not None:
                if len(old) != len(dims):
                    raise InputError(f"input {name!r} has rank {len(old)}, the shape given has {len(dims)}: {dims}")
                clash = [i for i, (o, d) in enumerate(zip(old, dims, strict=True)) if isinstance(o, int) and o != d]
                if clash:
                    raise InputError(f"input {name!r} fixes axis {clash[0]} at {old[clash[0]]}, the shape given "
                                     f"says {dims[clash[0]]}")
            if old != list(dims):
                value.shape = ir.Shape(dims)
                changed = True
        rounds = 0
        if changed:
            declared = {id(v): v.shape for v in graph.outputs}
            forget_shapes(graph)
            rounds = infer_and_fold(qmodel)
            for v in qmodel.graph.outputs:  # where inference cannot tell (an If), keep what was declared
                if v.shape is None:
                    v.shape = declared.get(id(v))
            _check_branches(qmodel, wanted)
        qmodel.analysis.record(self.name, shapes={n: list(d) for n, d in wanted.items()},
                               shape_folding_rounds=rounds)
        return PassResult(qmodel, changed)

    def ensures(self, qmodel: QModel) -> list[str]:
        """Each named input has exactly the shape asked for."""
        wanted = parse_shapes(self.shapes)
        wrong = [f"{v.name} is {v.shape}" for v in qmodel.graph.inputs if v.name in wanted
                 and (v.shape is None or tuple(v.shape) != wanted[v.name])]
        return [f"inputs not fixed as asked: {'; '.join(wrong)}"] if wrong else []


_CONTROL_FLOW = ("If", "Loop", "Scan")


def _deciding_inputs(node: ir.Node) -> list[str]:
    """The graph inputs an If's condition is computed from."""
    found, stack, seen = [], [node.inputs[0]], set()
    while stack:
        v = stack.pop()
        if v is None or id(v) in seen:
            continue
        seen.add(id(v))
        if v.is_graph_input():
            found.append(v.name or "")
        elif (p := v.producer()) is not None:
            stack.extend(p.inputs)
    return sorted(found)


def _check_branches(qmodel: QModel, wanted: dict[str, tuple[int, ...]]) -> None:
    """InputError when the fixed shapes make a control-flow body invalid (onnxruntime type-checks every branch).

    A branch never taken for these inputs can hold shapes that contradict them (Silero VAD's
    8 kHz branch, given a 16 kHz chunk); freezing the input its If decides on removes that branch.
    """
    flow = [n for n in qmodel.graph if n.op_type in _CONTROL_FLOW]
    if not flow:
        return
    from irq.ir.ort import make_session

    try:
        make_session(qmodel.to_proto(), threads=1)
    except Exception as e:  # onnxruntime's load error, verbatim below
        deciding = sorted({i for n in flow if n.op_type == "If" for i in _deciding_inputs(n)} - set(wanted))
        hint = (f"; freeze the input the If decides on (--input-value {deciding[0]}=...)" if deciding
                else "; the branches' shapes contradict these input shapes")
        raise InputError(f"model {qmodel.name!r}: with the inputs fixed at "
                         f"{', '.join(f'{k}={list(v)}' for k, v in wanted.items())} a control-flow branch becomes "
                         f"invalid ({str(e).splitlines()[0].split('FAIL : ')[-1][:160]}){hint}") from e


def infer_and_fold(qmodel: QModel, max_rounds: int = 8) -> int:
    """Shape inference then constant folding, repeated while folding changes the graph."""
    from irq.passes.fold_constants import FoldConstants
    from irq.passes.shape_inference import ShapeInference

    for rounds in range(1, max_rounds + 1):
        # Forget again each round: a folded If brings its branch's values, with the branch's
        # (symbolic) shapes, into the main graph, and inference keeps shapes it finds.
        forget_shapes(qmodel.graph, keep_outputs=True)
        ShapeInference().run(qmodel)
        if not FoldConstants(main_graph_only=True).run(qmodel).modified:
            return rounds
    ShapeInference().run(qmodel)
    return max_rounds


def forget_shapes(graph: ir.Graph, keep_outputs: bool = False) -> None:
    """Drop the main graph's shapes but the inputs' (outputs too, unless ``keep_outputs``).

    Exporters sometimes declare them wrongly; shape inference recomputes them. If/Loop bodies
    keep theirs, and constant folding leaves bodies alone: a body's shapes may describe inputs
    its branch is never taken for, and onnxruntime type-checks every branch at load.
    """
    for node in graph:
        for out in node.outputs:
            if out.const_value is None and not (keep_outputs and out.is_graph_output()):
                out.shape = None
