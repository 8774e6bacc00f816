"""Run a candidate only downstream of where it differs from a reference model.

A sensitivity candidate changes the precision of one layer: every node before it computes
exactly what the reference (the all-float or the all-quantized twin) computes. One reference
run per batch, with the values at each candidate's cut exposed, is shared by a group of
candidates; each then runs only its own suffix from those values. On a chain-like CNN that
halves the candidates' compute and the size of each session.

A node is the same as the reference's when it has the same name, op, attributes and inputs,
every input being a graph input, a same node's output or an initializer with identical bytes.
A cut never falls on a DequantizeLinear's output: the DequantizeLinear joins the suffix and
the cut takes its integer input, so onnxruntime fuses the suffix's int8 kernels as it fuses the
whole candidate's (the quantized side matches the whole candidate exactly; the float side to
within a few 1e-6, from onnxruntime's float kernels on a cut graph).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from irq.backends.base import Runner
from irq.ir.ort import batch_limit, make_session, with_outputs


def _initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in graph.initializer}


def _equal(a: onnx.TensorProto, b: onnx.TensorProto) -> bool:
    if a.data_type != b.data_type or list(a.dims) != list(b.dims) or a.data_location != b.data_location:
        return False
    if a.raw_data or b.raw_data:
        return a.raw_data == b.raw_data
    return a.SerializeToString() == b.SerializeToString()


def _same_values(candidate: onnx.GraphProto, reference: onnx.GraphProto) -> set[str]:
    """Names of the candidate's values that the reference computes identically (graph inputs included)."""
    ref_nodes = {n.name: n for n in reference.node if n.name}
    cand_init, ref_init = _initializers(candidate), _initializers(reference)
    same = {i.name for i in candidate.input}
    for node in candidate.node:  # topological order
        ref = ref_nodes.get(node.name)
        if ref is None or ref.op_type != node.op_type or ref.domain != node.domain or \
                list(ref.input) != list(node.input) or list(ref.output) != list(node.output) or \
                list(ref.attribute) != list(node.attribute):
            continue
        if all(not i or i in same or (i in cand_init and i in ref_init and _equal(cand_init[i], ref_init[i]))
               for i in node.input):
            same.update(o for o in node.output if o)
    return same


@dataclass(frozen=True)
class Suffix:
    """A candidate's nodes from its first difference on, fed from the reference's values ``cut``."""

    model: onnx.ModelProto  # its inputs untyped until the reference's values are seen
    cut: tuple[str, ...]
    outputs: tuple[str, ...]  # the candidate's outputs, in order
    from_reference: tuple[str, ...]  # those of them the reference computes as they are


def split(candidate: onnx.ModelProto, reference: onnx.ModelProto) -> Suffix:
    """The part of ``candidate`` that differs from ``reference``, as a model of its own."""
    graph = candidate.graph
    same = _same_values(graph, reference.graph)
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    rest = [n for n in graph.node if not all(o in same for o in n.output if o)]
    while True:  # a DequantizeLinear that feeds the suffix joins it: the cut is its integer input
        needed = {i for n in rest for i in n.input}
        joining = [n for n in graph.node if n.output and n.output[0] in dequantized & needed & same]
        if not joining:
            break
        same -= {n.output[0] for n in joining}
        rest = [n for n in graph.node if not all(o in same for o in n.output if o)]
    produced = {o for n in rest for o in n.output}
    init = _initializers(graph)
    cut = tuple(dict.fromkeys(i for n in rest for i in n.input if i and i not in produced and i not in init))
    outputs = tuple(o.name for o in graph.output)
    from_reference = tuple(o for o in outputs if o not in produced)
    sub = helper.make_graph(
        rest, graph.name, [helper.make_tensor_value_info(c, onnx.TensorProto.UNDEFINED, None) for c in cut],
        [o for o in graph.output if o.name in produced],
        [init[i] for i in dict.fromkeys(i for n in rest for i in n.input) if i in init])
    model = helper.make_model(sub, opset_imports=list(candidate.opset_import), ir_version=candidate.ir_version)
    model.functions.extend(candidate.functions)
    return Suffix(model, cut, outputs, from_reference)


def whole(candidate: onnx.ModelProto) -> Suffix:
    """The candidate as a suffix of itself: fed from the graph inputs, nothing from the reference."""
    graph = candidate.graph
    return Suffix(candidate, tuple(i.name for i in graph.input), tuple(o.name for o in graph.output), ())


def worth_sharing(candidates: Sequence[onnx.ModelProto], suffixes: Sequence[Suffix]) -> list[Suffix]:
    """Each member's suffix where running the reference once for them all saves work, else it whole.

    Node counts stand in for cost: the shared run costs about one whole model, so the group
    must save more than that; a member whose suffix is most of its model runs whole.
    """
    parts = [len(s.model.graph.node) / max(len(c.graph.node), 1) for c, s in zip(candidates, suffixes, strict=True)]
    share = [f < 0.9 for f in parts]
    if sum(1 - f for f, ok in zip(parts, share, strict=True) if ok) <= 1:
        share = [False] * len(share)
    return [s if ok else whole(c) for c, s, ok in zip(candidates, suffixes, share, strict=True)]


def _typed(suffix: Suffix, dtypes: dict[str, np.dtype]) -> onnx.ModelProto:
    """The suffix model with its inputs typed from the reference's values."""
    for value in suffix.model.graph.input:
        value.type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(dtypes[value.name])
    return suffix.model


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element types of the values a QuantizeLinear writes (its zero point's type) or value_info names."""
    found = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.output)}
    init = _initializers(model.graph)
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            zero = init.get(node.input[2]) if len(node.input) > 2 else None
            found[node.output[0]] = zero.data_type if zero is not None else onnx.TensorProto.UINT8
    return found


def _exposing(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """``model`` with ``names`` added to its outputs, each with its own element type."""
    exposed = with_outputs(model, names)
    types = _elem_types(model)
    for value in exposed.graph.output:
        if types.get(value.name):
            value.type.tensor_type.elem_type = types[value.name]
    return exposed


class SharedPrefix:
    """The reference model with every group member's cut exposed, run once per batch."""

    def __init__(self, reference: onnx.ModelProto, suffixes: Sequence[Suffix], threads: int | None) -> None:
        inputs = {i.name for i in reference.graph.input}
        names = [n for s in suffixes for n in (*s.cut, *s.from_reference)]
        self.exposed = list(dict.fromkeys(n for n in names if n not in inputs))
        self.session = make_session(_exposing(reference, self.exposed), threads, weights_in_memory=True) \
            if self.exposed else None
        self.input_names = [i.name for i in self.session.get_inputs()] if self.session else []
        self._names = [o.name for o in self.session.get_outputs()] if self.session else []
        self._last: tuple[Any, dict[str, np.ndarray]] | None = None

    def values(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The exposed values (and the feeds) for this batch; computed once per feeds object."""
        if not self.exposed:  # every member runs whole
            return feeds
        if self._last is None or self._last[0] is not feeds:
            outs = self.session.run(self._names, {k: feeds[k] for k in self.input_names})
            self._last = (feeds, {**feeds, **dict(zip(self._names, outs, strict=True))})
        return self._last[1]


class SuffixRunner(Runner):
    """One candidate: the shared prefix's values, then its own suffix."""

    runtime = "onnxruntime"

    def __init__(self, prefix: SharedPrefix, suffix: Suffix, threads: int | None) -> None:
        self.prefix, self.suffix, self.threads = prefix, suffix, threads
        self.session: Any = None

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The candidate's outputs for one batch."""
        values = self.prefix.values(feeds)
        if self.session is None and len(self.suffix.outputs) > len(self.suffix.from_reference):
            self.session = make_session(_typed(self.suffix, {c: values[c].dtype for c in self.suffix.cut}),
                                        self.threads, weights_in_memory=True)
        own: dict[str, np.ndarray] = {}
        if self.session is not None:
            names = [o.name for o in self.session.get_outputs()]
            own = dict(zip(names, self.session.run(names, {c: values[c] for c in self.suffix.cut}), strict=True))
        return [own[o] if o in own else values[o] for o in self.suffix.outputs]

    @property
    def max_batch(self) -> int | None:
        """The reference's batch limit (a suffix has no fixed batch of its own)."""
        if self.prefix.session is not None:
            return batch_limit(self.prefix.session)
        dims = [i.type.tensor_type.shape.dim for i in self.suffix.model.graph.input]
        return 1 if any(d and d[0].HasField("dim_value") and d[0].dim_value == 1 for d in dims) else None
