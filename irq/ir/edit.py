"""Checked graph surgery helpers shared by the rewriting passes.

New names come from a Namer that knows every name in the graph, so a new tensor can never
collide with an existing one, however the base name was chosen.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from irq.ir.model import constant_array, node_label


class UniqueNames:
    """Hands out names never handed out (or reserved) before: ``base``, ``base_1``, ..."""

    def __init__(self, used: set[str] | None = None) -> None:
        self._used: set[str] = set(used or ())

    def fresh(self, base: str) -> str:
        """``base`` if unused, else ``base_1``, ``base_2``... (the first free one)."""
        name, i = base, 0
        while name in self._used:
            i += 1
            name = f"{base}_{i}"
        self._used.add(name)
        return name


class Namer(UniqueNames):
    """Hands out value and node names that are unique within one graph."""

    def __init__(self, graph: ir.Graph) -> None:
        super().__init__()
        for v in graph.inputs:
            self._used.add(v.name or "")
        self._used.update(graph.initializers)
        for node in graph.all_nodes():
            if node.name:
                self._used.add(node.name)
            for out in node.outputs:
                if out.name:
                    self._used.add(out.name)


def add_initializer(graph: ir.Graph, namer: Namer, array: np.ndarray, base: str) -> ir.Value:
    """Register ``array`` as a new initializer and return its value."""
    name = namer.fresh(base)
    # np.ascontiguousarray turns a 0-d array into shape (1,); runtimes want scalar scales.
    # ir.Tensor, not ir.tensor: the latter's protocol isinstance checks cost 0.1 ms a call, and a
    # sensitivity run adds some 30,000 scales and zero points
    tensor = ir.Tensor(np.ascontiguousarray(array).reshape(np.shape(array)), name=name)
    value = ir.Value(name=name, const_value=tensor, type=ir.TensorType(tensor.dtype),
                     shape=ir.Shape(array.shape))
    graph.register_initializer(value)
    return value


def new_node(namer: Namer, op_type: str, inputs: Sequence[ir.Value | None], base: str, *,
             attributes: Mapping[str, Any] | None = None, domain: str = "",
             num_outputs: int = 1, version: int | None = None) -> ir.Node:
    """A node (not yet in a graph) with uniquely named outputs ``base``, ``base_1``..."""
    attrs = [ir.convenience.convert_attribute(k, v) for k, v in (attributes or {}).items()]
    outputs = [ir.Value(name=namer.fresh(base)) for _ in range(num_outputs)]
    return ir.Node(domain, op_type, inputs, attrs, outputs=outputs,
                   name=namer.fresh(f"{base}/{op_type}"), version=version)


def replace_input(node: ir.Node, old: ir.Value, new: ir.Value) -> None:
    """Point every input slot of ``node`` that reads ``old`` at ``new``."""
    for i, v in enumerate(node.inputs):
        if v is old:
            node.replace_input_with(i, new)


def ensure_opset(model: ir.Model, domain: str, version: int) -> None:
    """Import ``domain`` at ``version`` at least (the default domain is never downgraded)."""
    current = model.opset_imports.get(domain)
    if current is None or current < version:
        model.opset_imports[domain] = version
        model.graph.opset_imports[domain] = version


def replace_value(old: ir.Value, new: ir.Value) -> None:
    """Redirect every use of ``old`` (graph outputs included) to ``new``.

    A graph output keeps its public name, and its declared type and shape where ``new`` has
    none (a graph output without a type is invalid ONNX): ``new`` takes them over, since ``old``
    is going away.
    """
    was_output = old.is_graph_output()
    name = old.name
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    if was_output:
        old.name = None
        new.name = name
        if new.type is None:
            new.type = old.type
        if new.shape is None:
            new.shape = old.shape


def scope_safe_name(raw: str, names: UniqueNames, prefix: str) -> str:
    """``raw`` as a name TensorFlow accepts as a scope (and onnx2tf keeps), fresh from ``names``.

    Characters outside ``[A-Za-z0-9_./>-]`` become ``_``; a name must start with a letter, digit or
    dot, else ``prefix`` goes first.
    """
    base = re.sub(r"[^A-Za-z0-9_./>-]", "_", raw) or prefix
    return names.fresh(base if re.match(r"[A-Za-z0-9.]", base) else f"{prefix}{base}")


def add_to_bias(graph: ir.Graph, namer: Namer, node: ir.Node, shift: np.ndarray) -> None:
    """The layer's bias plus ``shift``, in a fresh initializer (a shared bias stays as it was for others)."""
    old = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    bias = shift if old is None else (old.astype(np.float64) + shift.reshape(old.shape)).astype(np.float32)
    value = add_initializer(graph, namer, bias, f"{node_label(node)}.bias_corrected")
    if len(node.inputs) < 3:
        node.resize_inputs(3)
    node.replace_input_with(2, value)
