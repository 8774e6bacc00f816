"""Per-layer SQNR of an ONNX artifact against its float model, in graph order.

Both models run in onnxruntime with intermediate values exposed as extra outputs. Tensors are
matched by name: the Q/DQ graph keeps the float model's names for its producers' outputs.
Where the artifact quantizes a value (``x -> QuantizeLinear -> DequantizeLinear``), it is read
after the DequantizeLinear, as its consumers see it. Values a rewrite removed (a BatchNorm
folded into its Conv, say) have no twin and are counted as unmatched. Statistics accumulate
over batches, so no activation is kept.

Exposing a value as an output can keep onnxruntime from fusing the nodes around it, so the
figures describe the Q/DQ arithmetic, not necessarily the fused integer kernels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from irq.data import DataSet
from irq.ir.ort import batch_limit, make_session
from irq.verify.metrics import ErrorStats

_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


def _types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value the shape inference can type."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    return {v.name: v.type.tensor_type.elem_type for v in (*g.value_info, *g.input, *g.output)}


def _read_points(model: onnx.ModelProto) -> dict[str, str]:
    """For each Q/DQ'd value, the DequantizeLinear output its consumers read instead."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    points = {}
    for q in model.graph.node:
        if q.op_type == "QuantizeLinear":
            for dq in consumers.get(q.output[0], []):
                if dq.op_type == "DequantizeLinear":
                    points[q.input[0]] = dq.output[0]
    return points


_ACTIVATIONS = {"Relu", "Clip"}  # the ones insert-qdq can fold into a quantizer's range


def matched_values(float_model: onnx.ModelProto, artifact: onnx.ModelProto) -> tuple[list[dict[str, Any]], int]:
    """(layer, op, float tensor, artifact tensor) for each float node output found in the artifact.

    A Relu/Clip the artifact folded into its input's quantizer is compared at that quantizer's
    output, and the layer before it at its raw (pre-activation) output.
    """
    produced = {o for n in artifact.graph.node for o in n.output}
    constant = {i.name for i in float_model.graph.initializer}
    ftypes, atypes = _types(float_model), _types(artifact)
    points = _read_points(artifact)
    folded = {n.output[0]: n.input[0] for n in float_model.graph.node
              if n.op_type in _ACTIVATIONS and n.output[0] not in produced and n.input[0] in produced}
    feeds_folded = set(folded.values())
    rows, unmatched = [], 0
    for i, node in enumerate(float_model.graph.node):
        if node.op_type == "Constant" or all(x in constant or not x for x in node.input):
            constant.update(node.output)
            continue
        out = node.output[0] if node.output else ""
        if ftypes.get(out) not in _FLOATS:
            continue
        if out in folded:
            read = points.get(folded[out], folded[out])
        elif out in produced:
            read = out if out in feeds_folded else points.get(out, out)
        else:
            unmatched += 1
            continue
        if atypes.get(read, onnx.TensorProto.FLOAT) not in _FLOATS:
            unmatched += 1
            continue
        rows.append({"layer": node.name or f"{node.op_type}_{i}", "op_type": node.op_type, "tensor": out,
                     "read_at": read, "float_type": ftypes[out], "artifact_type": atypes.get(read, 1)})
    return rows, unmatched


def _expose(model: onnx.ModelProto, names: list[tuple[str, int]]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    existing = {o.name for o in out.graph.output}
    for name, elem in names:
        if name not in existing:
            out.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
    return out


def layer_sqnr(float_model: bytes | onnx.ModelProto, artifact: Path | onnx.ModelProto, data: DataSet,
               max_samples: int = 64, batch_size: int = 16) -> dict[str, Any]:
    """SQNR, MSE, cosine and max abs error of each matched layer output, in the float graph's order."""
    fm = float_model if isinstance(float_model, onnx.ModelProto) else onnx.load_from_string(float_model)
    am = artifact if isinstance(artifact, onnx.ModelProto) else onnx.load(str(artifact))
    rows, unmatched = matched_values(fm, am)
    if not rows:
        return {"samples": 0, "layers": [], "unmatched": unmatched}
    fsess = make_session(_expose(fm, [(r["tensor"], r["float_type"]) for r in rows]))
    asess = make_session(_expose(am, [(r["read_at"], r["artifact_type"]) for r in rows]))
    fnames = [r["tensor"] for r in rows]
    anames = [r["read_at"] for r in rows]
    finputs = [i.name for i in fsess.get_inputs()]
    ainputs = [i.name for i in asess.get_inputs()]
    acc = [ErrorStats() for _ in rows]
    limit = min(x for x in (batch_limit(fsess), batch_limit(asess), batch_size) if x)
    seen = 0
    for batch in data.head(max_samples).batches(limit):
        ref = fsess.run(fnames, {k: batch[k] for k in finputs})
        out = asess.run(anames, {k: batch[k] for k in ainputs})
        for a, r, o in zip(acc, ref, out, strict=True):
            a.add(np.asarray(r), np.asarray(o))
        seen = min(len(data), max_samples)
    layers = [{k: r[k] for k in ("layer", "op_type", "tensor", "read_at")} | a.result()
              for r, a in zip(rows, acc, strict=True)]
    return {"samples": seen, "layers": layers, "unmatched": unmatched}


def worst_layers(section: dict[str, Any], n: int = 5) -> list[dict[str, Any]]:
    """The ``n`` layers with the lowest SQNR (where quantization error enters)."""
    return sorted(section.get("layers", []), key=lambda r: r["sqnr_db"])[:n]
