"""Per-layer error of the fully quantized model against float, from one pass over the data.

Both graphs run side by side with every unit's output exposed as an extra graph output; the
quantized graph is read where its consumers read it (after the unit's output Q/DQ pair), so a
folded ReLU/Clip is compared as the quantizer that replaced it. The statistics stream over
batches: no activation is kept, whatever the data size.
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir

from irq.data import DataSet
from irq.ir.model import QModel, node_label
from irq.ir.ort import batch_limit, make_session, with_outputs
from irq.sensitivity.units import Unit
from irq.verify.metrics import ErrorStats


def _values(graph: ir.Graph) -> dict[str, ir.Value]:
    found = {v.name: v for v in graph.inputs if v.name}
    for node in graph:
        for out in node.outputs:
            if out.name:
                found[out.name] = out
    return found


def _twin(value: ir.Value) -> str:
    """The name consumers read ``value`` through: its DequantizeLinear output when it has a Q/DQ pair."""
    for use in value.uses():
        q = use.node
        if q.op_type == "QuantizeLinear" and use.idx == 0:
            for use2 in q.outputs[0].uses():
                if use2.node.op_type == "DequantizeLinear":
                    return use2.node.outputs[0].name or ""
    return value.name or ""


def pairs(base: QModel, quantized: QModel, units: list[Unit]) -> list[tuple[str, str, str]]:
    """(unit, float value, quantized value) for every unit whose output can be found in both graphs."""
    outputs = {node_label(n): [o.name for o in n.outputs if o.name] for n in base.graph}
    qvalues = _values(quantized.graph)
    found = []
    for u in units:
        if not u.output:
            continue
        for label in reversed(u.members):  # a folded activation's output is gone; its input remains
            names = [n for n in outputs.get(label, [])[:1] if n in qvalues]
            if names:
                found.append((u.name, u.output, _twin(qvalues[names[0]])))
                break
    return found


_Stats = ErrorStats  # the same streaming figures as the report's per-layer SQNR


def layer_errors(base: QModel, quantized: QModel, units: list[Unit], data: DataSet,
                 threads: int | None = None, batch_size: int = 16) -> dict[str, dict[str, Any]]:
    """SQNR (dB), MSE and cosine of each unit's output, quantized model vs float, over ``data``."""
    matched = pairs(base, quantized, units)
    float_sess = make_session(with_outputs(base.to_proto(), [f for _, f, _ in matched]), threads)
    quant_sess = make_session(with_outputs(quantized.to_proto(), [q for _, _, q in matched]), threads)
    f_names = [o.name for o in float_sess.get_outputs()]
    q_names = [o.name for o in quant_sess.get_outputs()]
    f_idx = [f_names.index(f) for _, f, _ in matched]
    q_idx = [q_names.index(q) for _, _, q in matched]
    stats = [_Stats() for _ in matched]
    limit = min(batch_limit(float_sess) or batch_size, batch_size)
    for batch in data.batches(limit):
        f_out = float_sess.run(f_names, batch)
        q_out = quant_sess.run(q_names, batch)
        for s, i, j in zip(stats, f_idx, q_idx, strict=True):
            s.add(f_out[i], q_out[j])
    return {unit: {**s.result(), "float_value": f, "quantized_value": q}
            for (unit, f, q), s in zip(matched, stats, strict=True)}
