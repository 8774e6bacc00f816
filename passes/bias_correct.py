"""Bias correction: each int8 Conv/Gemm's bias absorbs the mean output shift its rounded weights cause.

Rounding weights to int8 shifts a layer's expected output: E[conv(x, W)] - E[conv(x, W_q)] =
E[conv(x, W - W_q)], per output channel. Depthwise convs (a few weights a channel) shift most,
and the shift compounds layer after layer (Nagel et al., "Data-Free Quantization", 2019). This
pass measures it on the calibration data. The op is linear in x, so E[op(x, W - W_q)] =
op(E[x], W - W_q): with each corrected layer's mean input (from calibrate's sweep with
``input-means``, else from one plain float run of its own), each op is evaluated once on it with
weights W - W_q and averaged over positions (2-D convs and Gemms in closed form): exact, padding
included. (A layer input with dynamic dims has no mean image; then every layer gets a probe op
on its input in a float run, reduced to a per-channel mean.) W_q is what
insert-qdq will write (same scales, integer range and granularity). The pass only measures
(``qmodel.bias_shifts``); insert-qdq adds a layer's shift to its bias when it quantizes that
layer's weights, so a layer the budget search keeps float keeps its own bias. Run it between
plan-precision and insert-qdq: ``...,calibrate,plan-precision,bias-correct,insert-qdq``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper, numpy_helper

from irq.ir.model import QModel, constant_array, node_label
from irq.ir.ort import make_session
from irq.pipeline.infra import Pass, PassResult
from irq.quant.arith import dequantize
from irq.quant.probes import PROBE_BATCH, add_channel_mean, mean_outputs
from irq.quant.weight_range import layer_weight, weight_axis, weight_qtype


def _plain_gemm(node: ir.Node) -> bool:
    attrs = node.attributes
    return attrs.get_int("transA", 0) == 0 and attrs.get_float("alpha", 1.0) == 1.0 and \
        attrs.get_float("beta", 1.0) == 1.0


def _targets(qmodel: QModel) -> list[tuple[ir.Node, np.ndarray]]:
    """(layer, W - W_q) for each layer to correct."""
    found = []
    for node in qmodel.graph:
        decision = qmodel.plan.get(node_label(node))
        if decision is None or not decision.precision.has_qdq_weights or node.op_type not in ("Conv", "Gemm"):
            continue
        if node.op_type == "Gemm" and not _plain_gemm(node):
            continue
        w = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
        if w is None or w.dtype != np.float32 or node.inputs[0] is None or node.inputs[0].const_value is not None:
            continue
        axis = weight_axis(node, w.ndim) if decision.per_channel else None
        q, scales = layer_weight(qmodel, node_label(node), w, axis, weight_qtype(node, qmodel.scheme))
        residual = w - dequantize(q, scales, np.zeros_like(scales, dtype=np.int64), axis)
        found.append((node, residual.astype(np.float32)))
    return found


def _node_attrs(node: ir.Node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in ir.serde.serialize_node(node).attribute}


def _add_residual_op(proto: onnx.ModelProto, name: str, x: str, node: ir.Node, residual: np.ndarray) -> None:
    """Append output ``name``: the per-channel mean of ``node``'s op on ``x`` with weights ``residual``.

    Conv and Gemm outputs both hold their channels on axis 1.
    """
    proto.graph.initializer.append(numpy_helper.from_array(residual, f"{name}_w"))
    proto.graph.node.append(helper.make_node(node.op_type, [x, f"{name}_w"], [f"{name}_y"], name=f"{name}_op",
                                             **_node_attrs(node)))
    rank = 2 if node.op_type == "Gemm" else residual.ndim  # a Conv's output has its weight's rank
    add_channel_mean(proto, f"{name}_y", name, [0, *range(2, rank)])


def _probe_model(qmodel: QModel, targets: list[tuple[ir.Node, np.ndarray]]) -> onnx.ModelProto:
    """The float model with one extra output per layer: the per-channel mean of op(x, W - W_q).

    Used when a layer's input has dynamic dims, so that its mean input cannot be formed.
    """
    proto = qmodel.to_proto()
    del proto.graph.output[:]
    for i, (node, residual) in enumerate(targets):
        _add_residual_op(proto, f"irq_bias_probe_{i}", node.inputs[0].name or "", node, residual)  # type: ignore[union-attr]
    return proto


def _static_inputs(targets: list[tuple[ir.Node, np.ndarray]]) -> bool:
    shapes = [t[0].inputs[0].shape for t in targets]  # type: ignore[union-attr]
    return all(s is not None and len(s) >= 2 and all(isinstance(d, int) for d in list(s)[1:]) for s in shapes)


def _measured(qmodel: QModel, targets: list[tuple[ir.Node, np.ndarray]]) -> bool:
    """Whether calibrate left a mean of every target's input, of the input's shape (less the batch)."""
    for node, _ in targets:
        x = node.inputs[0]
        mean = qmodel.input_means.get(x.name or "") if x is not None else None
        if mean is None or x is None or x.shape is None or tuple(mean.shape) != tuple(list(x.shape)[1:]):
            return False
    return True


def _mean_input_model(qmodel: QModel, inputs: list[str]) -> onnx.ModelProto:
    """The float model whose outputs are the sample mean (axis 0) of each named layer input."""
    proto = qmodel.to_proto()
    del proto.graph.output[:]
    for i, name in enumerate(inputs):
        add_channel_mean(proto, name, f"irq_bias_mean_{i}", [0])
    return proto


def _window_means(x: np.ndarray, kernel: tuple[int, int], attrs: dict) -> np.ndarray | None:
    """Per input channel and kernel tap, the mean of a 2-D conv's input (zero padding) over its outputs."""
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    (sh, sw), (dh, dw) = attrs.get("strides", [1, 1]), attrs.get("dilations", [1, 1])
    pt, pl, pb, pr = attrs.get("pads", [0, 0, 0, 0])
    xp = np.pad(x.astype(np.float64), ((0, 0), (pt, pb), (pl, pr)))
    ho, wo = (xp.shape[1] - dh * (kernel[0] - 1) - 1) // sh + 1, (xp.shape[2] - dw * (kernel[1] - 1) - 1) // sw + 1
    taps = np.empty((x.shape[0], *kernel))
    for a in range(kernel[0]):
        for b in range(kernel[1]):
            rows, cols = slice(a * dh, a * dh + sh * (ho - 1) + 1, sh), slice(b * dw, b * dw + sw * (wo - 1) + 1, sw)
            taps[:, a, b] = xp[:, rows, cols].sum((1, 2))
    return taps / (ho * wo)


def _closed_form_shift(node: ir.Node, residual: np.ndarray, x: np.ndarray) -> np.ndarray | None:
    """E[op(x, R)] from E[x] in numpy (2-D Conv, Gemm), or None where the ONNX op has to run."""
    attrs = _node_attrs(node)
    r = residual.astype(np.float64)
    if node.op_type == "Gemm":
        return r @ x if attrs.get("transB", 0) else x.astype(np.float64) @ r
    if residual.ndim != 4 or x.ndim != 3:
        return None
    taps = _window_means(x, (residual.shape[2], residual.shape[3]), attrs)
    if taps is None:
        return None
    group = int(attrs.get("group", 1))
    cout, cin_g = residual.shape[:2]
    shift = np.einsum("gocij,gcij->go", r.reshape(group, cout // group, cin_g, *residual.shape[2:]),
                      taps.reshape(group, cin_g, *residual.shape[2:]))
    return shift.reshape(cout)


def _shifts_from_means(targets: list[tuple[ir.Node, np.ndarray]], means: dict[str, np.ndarray]) -> list[np.ndarray]:
    """op(E[x], W - W_q) averaged over positions: E[op(x, R)] exactly, since the op is linear in x.

    Convs and Gemms in closed form (tap means of the zero-padded mean input); other ops run in
    onnxruntime once on the mean input.
    """
    shifts: list[np.ndarray | None] = [_closed_form_shift(node, residual, means[node.inputs[0].name or ""])
                                       for node, residual in targets]  # type: ignore[union-attr]
    rest = [(i, t) for i, t in enumerate(targets) if shifts[i] is None]
    for (i, _), shift in zip(rest, _run_on_means([t for _, t in rest], means), strict=True):
        shifts[i] = shift
    return [s for s in shifts if s is not None]


def _run_on_means(targets: list[tuple[ir.Node, np.ndarray]], means: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Each op once on its layer's mean input, in onnxruntime (the ops the closed form does not cover)."""
    if not targets:
        return []
    proto = helper.make_model(helper.make_graph([], "irq_bias_shifts", [], []),
                              opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    for i, (node, residual) in enumerate(targets):
        x = means[node.inputs[0].name or ""]  # type: ignore[union-attr]
        proto.graph.initializer.append(numpy_helper.from_array(x[None].astype(np.float32), f"s{i}_x"))
        _add_residual_op(proto, f"s{i}", f"s{i}_x", node, residual)
    return [np.asarray(a, np.float64) for a in make_session(proto.SerializeToString()).run(None, {})]


@dataclass(frozen=True)
class BiasCorrect(Pass):
    """Shift each int8 Conv/Gemm's bias by the mean output error of its quantized weights."""

    name = "bias-correct"
    reads_calibration_data = True
    rewrites_graph = False
    samples: int = 64
    batch_size: int = PROBE_BATCH

    def requires(self, qmodel: QModel) -> list[str]:
        """A current plan (without calibration data the pass measures nothing and says so)."""
        return qmodel.plan_problems()

    def run(self, qmodel: QModel) -> PassResult:
        """Measure every planned layer's shift in one float run (insert-qdq adds it to the bias)."""
        every = _targets(qmodel)
        targets = [(node, r) for node, r in every if node_label(node) not in qmodel.output_matched]
        if not targets or qmodel.calibration is None:
            why = "no calibration data" if qmodel.calibration is None else \
                "every int8 Conv/Gemm's rounding was learnt on quantized inputs (adaround)" if every else \
                "no int8 Conv/Gemm"
            qmodel.analysis.record(self.name, layers=0, skipped=why)
            return PassResult(qmodel, False)
        data = qmodel.calibration.head(self.samples) if self.samples else qmodel.calibration
        inputs = list(dict.fromkeys(t[0].inputs[0].name or "" for t in targets))  # type: ignore[union-attr]
        source, samples = "own float run", len(data)
        if _measured(qmodel, targets):  # calibrate{input-means=N} measured them in its sweep
            shifts = _shifts_from_means(targets, qmodel.input_means)
            source = "calibration sweep"
            samples = qmodel.analysis.of("calibrate").get("input_mean_samples", samples)
        elif _static_inputs(targets):  # one float run for the mean inputs, then each op once on its mean
            means = mean_outputs(_mean_input_model(qmodel, inputs).SerializeToString(), data, self.batch_size)
            shifts = _shifts_from_means(targets, dict(zip(inputs, means, strict=True)))
        else:
            shifts = mean_outputs(_probe_model(qmodel, targets).SerializeToString(), data, self.batch_size)
        qmodel.bias_shifts.update({node_label(node): np.asarray(shift, np.float32)
                                   for (node, _), shift in zip(targets, shifts, strict=True)})
        largest = max((float(np.max(np.abs(s), initial=0.0)) for s in shifts), default=0.0)
        qmodel.analysis.record(self.name, layers=len(targets), samples=samples, largest_shift=largest,
                               means_from=source, learnt_on_quantized_inputs=len(every) - len(targets))
        return PassResult(qmodel, True)
