"""The QDQ graph as a trainable torch module, with one fake quantizer per Q/DQ node.

The module is built from the graph that ``insert-qdq`` produced for the target, so each fake
quantizer sits exactly where the artifact will quantize: activation pairs become per-tensor
fake quantizers reading a learnable range, weight and bias DequantizeLinear nodes become
fake-quantized views of the float weights (held as ``nn.Parameter``), and every other node
runs as float torch code. Ranges that insert-qdq copies from one tensor to another (through
MaxPool, Flatten, Reshape...) share one ActRange, and a ReLU/Clip that it folded into a
quantizer keeps that quantizer's low end at 0, so the trained ranges export without conflict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import torch
from torch import nn

from irq.errors import ModelImportError, PassError
from irq.ir.model import QModel, constant_array, node_label
from irq.passes.insert_qdq import PASSTHROUGH
from irq.passes.plan_precision import WEIGHT_OPS
from irq.qat import ops
from irq.qat.fake_quant import ActRange, fake_quant, fake_quant_bias, fake_quant_weight, weight_scale
from irq.quant.spec import Precision, QType
from irq.quant.weight_range import weight_qtype

_QTYPES = {np.dtype(np.uint8): QType.UINT8, np.dtype(np.int8): QType.INT8,
           np.dtype(np.uint16): QType.UINT16, np.dtype(np.int16): QType.INT16}


@dataclass(frozen=True)
class Step:
    """One unit of the forward pass, reading and writing values by name.

    ``kind``: "op" (a float node), "act" (an activation Q/DQ pair), "weight" or "bias" (a
    constant DequantizeLinear). ``key`` names the ActRange (act) or the float weight (weight,
    bias); a bias also names its layer's weight, that weight's axis and its input's range.
    """

    kind: str
    label: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    key: str = ""
    qtype: QType = QType.INT8
    axis: int | None = None
    weight: str = ""
    input_qtype: QType = QType.UINT8


@dataclass(frozen=True)
class _Pair:
    """An activation Q/DQ pair: the tensor it quantizes and the parameters insert-qdq chose."""

    source: ir.Value
    qtype: QType
    scale: float
    zero_point: int


def _const(value: ir.Value | None) -> np.ndarray:
    array = constant_array(value)
    if array is None:
        raise NotImplementedError(f"tensor {value.name if value is not None else None!r} is not a constant")
    return array


def _pair_source(value: ir.Value | None) -> _Pair | None:
    """The activation pair whose DequantizeLinear produced ``value`` (None if it is not one)."""
    dq = value.producer() if value is not None else None
    if dq is None or dq.op_type != "DequantizeLinear" or dq.inputs[0] is None:
        return None
    q = dq.inputs[0].producer()
    if q is None or q.op_type != "QuantizeLinear" or q.inputs[0] is None:
        return None
    zp = _const(q.inputs[2])
    return _Pair(q.inputs[0], _QTYPES[zp.dtype], float(_const(q.inputs[1])), int(zp))


class QDQModule(nn.Module):
    """A QDQ graph as a torch module: float weights train, quantizers simulate the artifact.

    ``structure`` is the model after plan-precision and insert-qdq; ``float_model`` is the same
    model just before (its float initializers are the starting weights, found through node names).
    """

    def __init__(self, structure: QModel, float_model: QModel, learn_ranges: bool = False) -> None:
        super().__init__()
        self.model_name = structure.name
        self.symmetric = structure.scheme.symmetric_activations
        self.scheme = structure.scheme
        graph = structure.graph
        self.input_names = [v.name or "" for v in graph.inputs if v.const_value is None]
        self.output_names = [v.name or "" for v in graph.outputs]
        self.weights = nn.ParameterList()
        self.weight_index: dict[str, int] = {}  # float initializer name -> index in self.weights
        self.ranges = nn.ModuleDict()
        self.range_keys: dict[str, str] = {}  # activation name -> key in self.ranges
        self.folded_outputs: dict[str, str] = {}  # range key -> output of the activation folded into it
        self._const_index: dict[str, str] = {}
        self._fns: dict[str, ops.OpFn] = {}
        self.steps: list[Step] = []
        self._structure, self._float, self._learn = structure, float_model, learn_ranges
        self._float_nodes = {node_label(n): n for n in float_model.graph}
        remaining = {node_label(n) for n in graph}
        self._folded = {n.inputs[0].name: n for n in float_model.graph
                        if n.op_type in ("Relu", "Clip") and node_label(n) not in remaining and n.inputs[0] is not None}
        unsupported = []
        for node in graph:
            try:
                self._add(node, node_label(node))
            except NotImplementedError as e:
                unsupported.append(f"{node_label(node)} ({e})")
        if unsupported:
            raise ModelImportError(f"model {self.model_name!r}: QAT cannot translate {len(unsupported)} node(s): "
                                   f"{'; '.join(unsupported[:8])}; supported ops: {', '.join(sorted(ops.BUILDERS))}")
        del self._structure, self._float, self._float_nodes, self._folded

    # -- construction -------------------------------------------------------------------------
    def _add(self, node: ir.Node, label: str) -> None:
        out = tuple(v.name or "" for v in node.outputs)
        if node.op_type == "QuantizeLinear":
            if any(u.node.op_type != "DequantizeLinear" for u in node.outputs[0].uses()):
                raise NotImplementedError("QuantizeLinear read by something other than DequantizeLinear")
            return
        if node.op_type == "DequantizeLinear":
            pair = _pair_source(node.outputs[0])
            if pair is not None:
                key = self._range_key(pair.source)
                self._check_act(pair, key)
                self.steps.append(Step("act", label, (pair.source.name or "",), out, key, pair.qtype))
                return
            self.steps.append(self._const_dq(node, label, out))
            return
        self._fns[label] = ops.build(node, [constant_array(v) for v in node.inputs])
        names = [self._input_name(node, i, v) for i, v in enumerate(node.inputs)]
        self.steps.append(Step("op", label, tuple(names), out))

    def _const_dq(self, dq: ir.Node, label: str, out: tuple[str, ...]) -> Step:
        """A weight or bias DequantizeLinear, as a fake quantizer of the layer's float weight."""
        uses = list(dq.outputs[0].uses())
        layer = uses[0].node if uses else None
        slot = uses[0].idx if uses else -1
        original = self._float_nodes.get(node_label(layer)) if layer is not None else None
        if layer is None or original is None or layer.op_type not in WEIGHT_OPS or slot not in (1, 2):
            raise NotImplementedError("a constant DequantizeLinear that is not a layer's weight or bias")
        scale = constant_array(dq.inputs[1])
        axis = dq.attributes.get_int("axis", 1) if scale is not None and scale.ndim == 1 else None
        name = self._param(original.inputs[slot].name or "")
        w_dq = layer.inputs[1].producer() if slot == 2 else dq
        w_scale = constant_array(w_dq.inputs[1]) if w_dq is not None else None
        w_axis = w_dq.attributes.get_int("axis", 1) if w_scale is not None and w_scale.ndim == 1 else None
        qtype = weight_qtype(original, self.scheme)  # the formula insert-qdq used for this layer
        if slot == 1:
            self._check_weight(dq, name, axis, qtype)
            return Step("weight", label, (), out, name, qtype, axis)
        pair = _pair_source(layer.inputs[0])
        if pair is None:
            raise NotImplementedError("a quantized bias whose layer input is not quantized")
        weight = self._param(original.inputs[1].name or "")
        return Step("bias", label, (pair.source.name or "",), out, name, qtype, w_axis, weight,
                    pair.qtype)

    def _check_act(self, pair: _Pair, key: str) -> None:
        """PassError unless the fake quantizer starts from insert-qdq's very scale and zero point."""
        with torch.no_grad():
            scale, zp = self.act_range(key).spec(pair.qtype, self.symmetric)
        if (float(scale), int(zp)) != (pair.scale, pair.zero_point):
            raise PassError(f"model {self.model_name!r}: QAT's quantizer of {pair.source.name!r} has scale/zero "
                            f"point {(float(scale), int(zp))}, insert-qdq wrote {(pair.scale, pair.zero_point)}")

    def _check_weight(self, dq: ir.Node, name: str, axis: int | None, qtype: QType) -> None:
        """PassError unless fake-quantizing the float weight gives insert-qdq's integers and scales."""
        with torch.no_grad():
            w = self.weights[self.weight_index[name]]
            fq, scale = fake_quant_weight(w, axis, qtype)
            codes = torch.round(fq / scale).to(torch.int64).numpy()
        stored, scales = _const(dq.inputs[0]), _const(dq.inputs[1])
        if not (np.array_equal(codes, stored) and np.array_equal(scale.numpy().reshape(-1), scales.reshape(-1))):
            raise PassError(f"model {self.model_name!r}: QAT's fake quantization of weight {name!r} "
                            f"({qtype.value}, axis {axis}) differs from what insert-qdq stored")

    def _param(self, name: str) -> str:
        if name not in self.weight_index:
            array = self._float.graph.initializers[name].const_value.numpy()
            self.weight_index[name] = len(self.weights)
            self.weights.append(nn.Parameter(torch.from_numpy(np.array(array, np.float32))))
        return name

    def _input_name(self, node: ir.Node, i: int, v: ir.Value | None) -> str:
        """Where an op input comes from: a value, a trainable float weight or a constant."""
        if v is None:
            return ""
        if v.const_value is None:
            return v.name or ""
        name = v.name or f"{node_label(node)}:{i}"
        if (node.op_type in WEIGHT_OPS and i in (1, 2) and v.dtype == ir.DataType.FLOAT
                and name in self._float.graph.initializers):
            return "param:" + self._param(name)  # a layer kept in float trains in float
        if name not in self._const_index:
            key = f"c{len(self._const_index)}"
            self.register_buffer(key, torch.from_numpy(np.array(v.const_value.numpy())), persistent=False)
            self._const_index[name] = key
        return "const:" + name

    def _range_key(self, value: ir.Value) -> str:
        """The ActRange of ``value``; passthrough outputs share their input's (insert-qdq copies it)."""
        name = value.name or ""
        if name in self.range_keys:
            return self.range_keys[name]
        producer = value.producer()
        decision = self._structure.plan.get(node_label(producer)) if producer is not None else None
        if (producer is not None and producer.op_type in PASSTHROUGH and decision is not None
                and decision.precision in (Precision.INT8, Precision.INT16)):
            pair = _pair_source(producer.inputs[0])
            if pair is not None:
                self.range_keys[name] = self._range_key(pair.source)
                return self.range_keys[name]
        act = self._folded.get(name)
        cap = None
        if act is not None and act.op_type == "Clip" and len(act.inputs) > 2:
            bound = constant_array(act.inputs[2])
            cap = float(bound) if bound is not None else None
        key = f"r{len(self.ranges)}"
        self.ranges[key] = ActRange(self._structure.ranges[name], self._learn, act is not None, cap)
        self.range_keys[name] = key
        if act is not None:
            self.folded_outputs[key] = act.outputs[0].name or ""
        return key

    # -- running ------------------------------------------------------------------------------
    def act_range(self, key: str) -> ActRange:
        """The ActRange stored under ``key`` (see ``range_keys``)."""
        r = self.ranges[key]
        assert isinstance(r, ActRange)
        return r

    def weight(self, name: str) -> nn.Parameter:
        """The float (latent) weight behind initializer ``name``."""
        return self.weights[self.weight_index[name]]

    def _value(self, env: dict[str, torch.Tensor], name: str) -> torch.Tensor | None:
        if not name:
            return None
        if name.startswith("param:"):
            return self.weight(name[6:])
        if name.startswith("const:"):
            return getattr(self, self._const_index[name[6:]])
        return env[name]

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Run the graph; inputs by position (graph order) or by name; one output unwrapped."""
        env = self.values({**dict(zip(self.input_names, args, strict=False)), **kwargs})
        outs = tuple(env[n] for n in self.output_names)
        return outs[0] if len(outs) == 1 else outs

    def values(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every named value of one forward pass (graph inputs by name), for inspection."""
        env = dict(inputs)
        for step in self.steps:
            if step.kind == "act":
                scale, zp = self.act_range(step.key).spec(step.qtype, self.symmetric)
                env[step.outputs[0]] = fake_quant(env[step.inputs[0]], scale, zp, step.qtype)
            elif step.kind == "weight":
                env[step.outputs[0]] = fake_quant_weight(self.weight(step.key), step.axis, step.qtype)[0]
            elif step.kind == "bias":
                in_scale, _ = self.act_range(self.range_keys[step.inputs[0]]).spec(step.input_qtype, self.symmetric)
                w_scale = weight_scale(self.weight(step.weight), step.axis, step.qtype)
                env[step.outputs[0]] = fake_quant_bias(self.weight(step.key), in_scale, w_scale)
            else:
                results = self._fns[step.label]([self._value(env, n) for n in step.inputs])
                env.update(zip(step.outputs, results, strict=False))
        return env
