"""``--verify-each``: after every pass, onnx's checker, irq's own IR invariants and the pass's ``ensures``.

A pass that leaves the graph invalid is named at once, instead of a converter failing three
passes later on a graph nobody wrote.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import onnx_ir as ir

from irq.errors import PassError
from irq.ir.model import QModel, node_label
from irq.pipeline.infra import Instrument, Pass, PassResult

#: onnx's checker reads protos whole; past this size it is skipped (a 2 GB proto cannot be built).
_CHECKER_LIMIT = 1 << 30


def invariants(qmodel: QModel) -> list[str]:
    """Irq's own rules for a well-formed IR: values defined before use, unique names, outputs produced."""
    problems: list[str] = []
    graph = qmodel.graph
    defined: set[ir.Value] = set(graph.inputs) | set(graph.initializers.values())
    names: set[str] = set()
    for node in graph:
        for value in node.inputs:
            if value is not None and value not in defined and value.producer() is not node:
                problems.append(f"node {node_label(node)!r} reads {value.name!r} before anything defines it")
        for value in node.outputs:
            if value.name and value.name in names:
                problems.append(f"value name {value.name!r} is defined twice (again by {node_label(node)!r})")
            names.add(value.name or "")
            defined.add(value)
    for value in graph.outputs:
        if value not in defined:
            problems.append(f"graph output {value.name!r} is produced by no node")
    return problems[:10]


def checker_problems(qmodel: QModel) -> list[str]:
    """What onnx's checker says of the serialized model (nothing past 1 GB)."""
    proto = qmodel.to_proto()
    if proto.ByteSize() > _CHECKER_LIMIT:
        return []
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        return [f"onnx checker: {str(e).strip().splitlines()[0]}"]
    return []


@dataclass
class VerifyEachInstrument(Instrument):
    """Checks the IR after each pass; PassError names the pass that broke it."""

    checker: bool = True

    def after(self, pass_: Pass, result: PassResult, index: int) -> None:
        """Run every check on the model as ``pass_`` left it."""
        problems = (checker_problems(result.model) if self.checker else []) + invariants(result.model)
        problems += pass_.ensures(result.model)
        if problems:
            raise PassError(f"after pass {pass_.spec()!r} (pass {index} of this pipeline) the IR of model "
                            f"{result.model.name!r} is broken: {'; '.join(problems)}")
