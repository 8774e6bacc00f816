"""Q/DQ insertion: materialise the plan and the calibrated ranges as ONNX QDQ nodes.

Weights become int8 initializers read through DequantizeLinear (per output channel by
default), biases int32 with scale input_scale * weight_scale, and each activation read by
an int8 node goes through one shared QuantizeLinear/DequantizeLinear pair. A ReLU or
Clip(0, a) right after a quantized layer is folded into that layer's output quantizer
(the quantizer clamps exactly as the activation would), as integer kernels fuse it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from irq.errors import PassError
from irq.ir.edit import Namer, add_initializer, add_to_bias, ensure_opset, new_node, replace_input
from irq.ir.model import QModel, constant_array, node_label
from irq.pipeline.infra import Pass, PassResult
from irq.quant.arith import activation_spec, quantize_bias
from irq.quant.recurrent import RECURRENT_OPS, int8_recurrent_weights
from irq.quant.spec import Precision, QType, QuantSpec, TensorRange
from irq.quant.weight_range import layer_weight, planned_weight, range_decision

#: Ops whose output takes the input's quantization parameters (they only move values).
PASSTHROUGH = frozenset({"MaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze",
                         "Slice", "Split", "Identity"})
_MS = "com.microsoft"


def _fusable_activation(node: ir.Node) -> bool:
    if node.op_type == "Relu":
        return True
    if node.op_type == "Clip" and len(node.inputs) > 1:
        lo = constant_array(node.inputs[1])
        return lo is not None and float(lo) == 0.0
    return False


@dataclass(frozen=True)
class InsertQDQ(Pass):
    """Rewrite the graph to ONNX QDQ form from ``qmodel.plan`` and ``qmodel.ranges``.

    ``activations=false`` quantizes weights only (int8 weights, float activations).
    """

    name = "insert-qdq"
    keeps_plan = True
    activations: bool = True
    fuse_activations: bool = True

    def requires(self, qmodel: QModel) -> list[str]:
        """A current precision plan."""
        return qmodel.plan_problems()

    def run(self, qmodel: QModel) -> PassResult:
        """Insert Q/DQ nodes; PassError names a tensor without a calibrated range."""
        if qmodel.model.opset_imports.get("", 0) < 13:
            raise PassError(f"model {qmodel.name!r} uses opset {qmodel.model.opset_imports.get('')}: "
                            "per-channel Q/DQ needs opset 13 or newer")
        return _Rewriter(qmodel, self.activations, self.fuse_activations).rewrite()

    def ensures(self, qmodel: QModel) -> list[str]:
        """QDQ form: every QuantizeLinear feeds only DequantizeLinear nodes."""
        bad = [node_label(n) for n in qmodel.graph if n.op_type == "QuantizeLinear"
               and any(use.op_type != "DequantizeLinear" for out in n.outputs for use, _ in out.uses())]
        return [f"QuantizeLinear nodes feed other ops: {', '.join(bad[:5])}"] if bad else []


class _Rewriter:
    """The state of one Q/DQ insertion over one graph."""

    def __init__(self, qmodel: QModel, activations: bool, fuse_activations: bool) -> None:
        self._q, self._graph, self._namer = qmodel, qmodel.graph, Namer(qmodel.graph)
        self.activations, self.fuse_activations = activations, fuse_activations
        self._pairs: dict[tuple[str, QType], ir.Value] = {}
        self._specs: dict[str, QuantSpec] = {}
        self._weights: dict[tuple[int, int | None, QType], ir.Value] = {}
        self._int4: list[ir.Value] = []  # int8 initializers that hold int4 values (a backend may pack them)

    def rewrite(self) -> PassResult:
        """Materialise the plan."""
        qmodel, graph = self._q, self._graph
        quantized = {label for label, d in qmodel.plan.items()
                     if d.precision in (Precision.INT8, Precision.INT16)} if self.activations else set()
        weight_only = {label for label, d in qmodel.plan.items() if d.precision == Precision.INT8_WEIGHT}
        recurrent = {label for label, d in qmodel.plan.items() if d.precision == Precision.DYNAMIC_INT8}
        nodes = list(graph)
        if quantized and self.fuse_activations:
            self._fold_activations(nodes, quantized)
            nodes = list(graph)
        self._propagate_ranges(nodes, quantized)
        changed, recurrent_done = False, 0
        for node in nodes:
            label = node_label(node)
            if label in quantized:
                qtype = self._act_type(label)
                for v in list(node.inputs):
                    if v is not None and v.const_value is None and v.dtype == ir.DataType.FLOAT:
                        replace_input(node, v, self._dq_of(v, qtype))
                        changed = True
            if label in quantized or label in weight_only:
                changed |= self._quantize_weights(node, label)
            elif label in recurrent and node.op_type in RECURRENT_OPS and int8_recurrent_weights(graph, self._namer,
                                                                                               node):
                changed, recurrent_done = True, recurrent_done + 1
        if any(qtype.bits == 16 for _, qtype in self._pairs):
            ensure_opset(qmodel.model, _MS, 1)  # 16-bit Q/DQ before opset 21 are onnxruntime's contrib ops
        if changed:
            RemoveUnusedNodesPass()(qmodel.model)  # the float weights that were replaced
        qmodel.analysis.record("insert-qdq", activation_pairs=len(self._pairs), quantized_nodes=len(quantized),
                               weight_only_nodes=len(weight_only), int8_weight_recurrent_nodes=recurrent_done,
                               weights=range_decision(qmodel.scheme),
                               int4_weights=[v.name for v in self._int4 if v.name])
        return PassResult(qmodel, changed)

    def _act_type(self, label: str) -> QType:
        if self._q.plan[label].precision == Precision.INT16:
            return QType.INT16 if self._q.scheme.activation.signed else QType.UINT16
        return self._q.scheme.activation

    def _fold_activations(self, nodes: list[ir.Node], quantized: set[str]) -> None:
        """Drop Relu/Clip(0,a) between two quantized layers; the quantizer clamps instead."""
        for act in nodes:
            if act.op_type not in ("Relu", "Clip") or node_label(act) not in quantized:
                continue
            x, y = act.inputs[0], act.outputs[0]
            producer = x.producer() if x is not None else None
            consumers = [u.node for u in y.uses()]
            if (not _fusable_activation(act) or producer is None or node_label(producer) not in quantized
                    or len(x.uses()) != 1 or x.is_graph_output() or y.is_graph_output() or not consumers
                    or any(node_label(c) not in quantized for c in consumers) or y.name not in self._q.ranges):
                continue
            r = self._q.ranges[y.name]
            # Clamp [lo, hi] to what the activation can output, so the quantizer clamps the same way.
            hi = r.hi
            if act.op_type == "Clip" and len(act.inputs) > 2 and constant_array(act.inputs[2]) is not None:
                hi = min(hi, float(constant_array(act.inputs[2])))  # type: ignore[arg-type]
            self._q.ranges[x.name or ""] = TensorRange(0.0, max(hi, 0.0), r.method)
            y.replace_all_uses_with(x)  # type: ignore[arg-type]
            self._graph.remove(act, safe=True)

    def _propagate_ranges(self, nodes: list[ir.Node], quantized: set[str]) -> None:
        """Give passthrough ops' outputs their input's range (no requantization inside them)."""
        for node in nodes:
            if node.op_type in PASSTHROUGH and node_label(node) in quantized and node.inputs:
                src = node.inputs[0]
                if src is not None and src.name in self._q.ranges:
                    for out in node.outputs:
                        if out.name:
                            self._q.ranges[out.name] = self._q.ranges[src.name]

    def _dq_of(self, value: ir.Value, qtype: QType) -> ir.Value:
        """The dequantized twin of ``value`` (one Q/DQ pair per tensor and type, shared)."""
        key = (value.name or "", qtype)
        if key in self._pairs:
            return self._pairs[key]
        r = self._q.ranges.get(value.name or "")
        if r is None:
            raise PassError(f"tensor {value.name!r} has no calibrated range; run calibrate first")
        spec = activation_spec(r, qtype, self._q.scheme.symmetric_activations)
        self._specs[value.name or ""] = spec
        domain = _MS if qtype.bits == 16 else ""
        base = value.name or "act"
        scale = add_initializer(self._graph, self._namer, np.array(spec.scale[0], np.float32), f"{base}_scale")
        zp = add_initializer(self._graph, self._namer,
                             np.array(spec.zero_point[0], qtype.numpy_dtype), f"{base}_zero_point")
        q = new_node(self._namer, "QuantizeLinear", [value, scale, zp], f"{base}_quantized", domain=domain)
        dq = new_node(self._namer, "DequantizeLinear", [q.outputs[0], scale, zp], f"{base}_dequantized",
                      domain=domain)
        dq.outputs[0].dtype = ir.DataType.FLOAT
        dq.outputs[0].shape = value.shape
        producer = value.producer()
        if producer is not None:
            self._graph.insert_after(producer, [q, dq])
        else:
            self._graph.insert_before(next(iter(self._graph)), [q, dq])
        self._pairs[key] = dq.outputs[0]
        return dq.outputs[0]

    def _quantize_weights(self, node: ir.Node, label: str) -> bool:
        found = planned_weight(self._q, node, label)
        if found is None:
            return False
        # An int4 scheme gets int4 values ([-7, 7], scale max|w|/7) held in int8 initializers:
        # packed INT4 storage would need opset 21, which changes other ops' signatures.
        index, w, axis, qtype = found
        w_value = node.inputs[index]
        w_q, scales = layer_weight(self._q, label, w, axis, qtype)
        shift = self._q.bias_shifts.get(label)
        if shift is not None and node.op_type in ("Conv", "Gemm"):
            add_to_bias(self._graph, self._namer, node, shift)  # what rounding these weights shifts, measured
        key = (id(w_value), axis, qtype)
        if key not in self._weights:  # a weight shared by several layers is stored once
            self._weights[key] = self._dequantize_const(w_q, scales, axis, w_value.name or f"{label}.weight")
            if qtype is QType.INT4:
                self._int4.append(self._weights[key].producer().inputs[0])  # type: ignore[union-attr,arg-type]
        node.replace_input_with(index, self._weights[key])
        if len(node.inputs) > 2 and node.inputs[2] is not None and node.op_type != "MatMul":
            self._quantize_bias(node, scales, axis)
        return True

    def _dequantize_const(self, q: np.ndarray, scales: np.ndarray, axis: int | None, base: str) -> ir.Value:
        g, n = self._graph, self._namer
        q_v = add_initializer(g, n, q, f"{base}_quantized")
        s_v = add_initializer(g, n, scales if axis is not None else scales.reshape(()), f"{base}_scale")
        attrs = {"axis": axis} if axis is not None else {}
        inputs = [q_v, s_v]
        if q.dtype != np.int32:
            # Biases (int32) omit their zero point, ONNX's default 0: 4 bytes a channel saved.
            # Weights keep theirs: onnxruntime's QGemm wants one zero point per scale.
            inputs.append(add_initializer(g, n, np.zeros(scales.shape if axis is not None else (), q.dtype),
                                         f"{base}_zero_point"))
        dq = new_node(n, "DequantizeLinear", inputs, f"{base}_dequantized", attributes=attrs)
        dq.outputs[0].dtype = ir.DataType.FLOAT
        dq.outputs[0].shape = ir.Shape(q.shape)
        g.insert_before(next(iter(g)), dq)
        return dq.outputs[0]

    def _quantize_bias(self, node: ir.Node, w_scales: np.ndarray, axis: int | None) -> None:
        b = constant_array(node.inputs[2])
        x = node.inputs[0]
        x_spec = None
        if x is not None and x.producer() is not None and x.producer().op_type == "DequantizeLinear":  # type: ignore[union-attr]
            src = x.producer().inputs[0].producer().inputs[0]  # type: ignore[union-attr]
            x_spec = self._specs.get(src.name or "")
        if b is None or x_spec is None or b.ndim != 1:
            return
        scales = w_scales if axis is not None else np.full(b.shape, w_scales.reshape(-1)[0], np.float32)
        b_q, b_scales = quantize_bias(b, x_spec.scale[0], scales)
        base = node.inputs[2].name or "bias"  # type: ignore[union-attr]
        node.replace_input_with(2, self._dequantize_const(b_q, b_scales, 0, base))
