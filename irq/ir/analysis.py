"""A networkx view of the IR for analysis: order, branches, residuals, first/last layers, dominators."""

from __future__ import annotations

import networkx as nx
import onnx_ir as ir

from irq.ir.model import constant_array, node_label

#: Ops that carry learned weights and dominate compute; the layers quantization is about.
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN", "Attention"})
_SOURCE = "<inputs>"


def has_constant_weight(node: ir.Node) -> bool:
    """True when input 1 of a compute node is a constant (a weight, not an activation)."""
    return len(node.inputs) > 1 and constant_array(node.inputs[1]) is not None


def to_networkx(graph: ir.Graph) -> nx.DiGraph:
    """A DiGraph with one vertex per node (keyed by label) plus a source for the graph inputs.

    Edges carry the activation value name; constants are not edges.
    """
    g = nx.DiGraph()
    g.add_node(_SOURCE, op_type="<inputs>")
    for node in graph:
        g.add_node(node_label(node), op_type=node.op_type, node=node)
    for node in graph:
        dst = node_label(node)
        for v in node.inputs:
            if v is None or v.const_value is not None:
                continue
            producer = v.producer()
            if producer is not None:
                g.add_edge(node_label(producer), dst, value=v.name)
            elif v.is_graph_input():
                g.add_edge(_SOURCE, dst, value=v.name)
    return g


def compute_layers(graph: ir.Graph) -> list[ir.Node]:
    """Compute nodes in topological order."""
    return [n for n in graph if n.op_type in COMPUTE_OPS]


def first_and_last_layers(graph: ir.Graph) -> tuple[list[str], list[str]]:
    """First and last compute layers.

    First: no compute layer before them on any path from an input; last: none after them.
    """
    g = to_networkx(graph)
    compute = {node_label(n) for n in compute_layers(graph)}
    first, last = [], []
    for name in compute:
        ancestors = nx.ancestors(g, name)
        if not ancestors & compute:
            first.append(name)
        if not nx.descendants(g, name) & compute:
            last.append(name)
    order = {node_label(n): i for i, n in enumerate(graph)}
    return sorted(first, key=order.__getitem__), sorted(last, key=order.__getitem__)


def residual_joins(graph: ir.Graph) -> list[str]:
    """Nodes where branches meet (more than one activation input with distinct producers)."""
    g = to_networkx(graph)
    return [n for n in g if n != _SOURCE and g.in_degree(n) > 1]


def branch_points(graph: ir.Graph) -> list[str]:
    """Nodes whose output feeds more than one consumer."""
    g = to_networkx(graph)
    return [n for n in g if g.out_degree(n) > 1]


def dominators(graph: ir.Graph) -> dict[str, str]:
    """Immediate dominator of each node, from the graph inputs."""
    return dict(nx.immediate_dominators(to_networkx(graph), _SOURCE))
