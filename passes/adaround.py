"""AdaRound: learn whether each weight rounds up or down, layer by layer, on calibration data.

Round-to-nearest minimises each weight's own error, not the layer's output error; with 4 bits
the difference decides whether a CNN works (Nagel et al., "Up or Down? Adaptive Rounding for
Post-Training Quantization", 2020). For each Conv (2-D) and Gemm whose weights the plan
quantizes, with the scales already chosen (max-abs or weight-scales'), this pass optimises a
soft rounding h(V) in [0, 1] per weight so that op(x, W) - op(x_q, s * (floor(W / s) + h(V)))
is small, x being the layer's float input and x_q what the quantized model gives it, while a
regulariser, annealed, pushes every h to 0 or 1; then it keeps floor(W / s) + [h >= 0.5] (or
round-to-nearest, where the learnt rounding does worse on the rows it checks). Layers are
learnt in graph order and x_q is captured just before each, with every earlier layer's learnt
rounding in, so each layer also makes up for the error upstream of it (as AMD Quark's fast
finetune does; ``inputs=float`` learns on x alone). When a Relu or Clip alone consumes the
layer, the error is taken after it, bias included: a ReLU6 hides every error outside [0, 6].
EfficientNet-Lite0 int8, 100 samples, KL(float || int8) on held-out crops: round-to-nearest
with bias correction 0.0123, float inputs 0.0094, quantized inputs 0.0047 (bench/RESULTS.md).
Torch on CPU, a bounded number of steps per layer and a time limit for the whole pass (layers
left when it runs out keep round-to-nearest, and the record says which). Float inputs are
captured a few layers at a time in one run per group, quantized ones one layer at a time from
the graph cut down to what computes them, so memory holds one group's activations, never the
whole model's.

The integer weights land in ``qmodel.rounded_weights``; insert-qdq uses them, and bias-correct
leaves the layers learnt on quantized inputs alone (``qmodel.output_matched``): their rounding
already absorbs the mean shift, and correcting it again undid half the gain (KL 0.0047 -> 0.0074).
Run after plan-precision (and weight-scales), before bias-correct.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from irq.errors import PassError
from irq.ir.model import QModel, constant_array, node_label, only_reader
from irq.ir.ort import with_outputs
from irq.pipeline.infra import Pass, PassResult
from irq.quant.arith import weight_scales
from irq.quant.probes import batch_outputs
from irq.quant.weight_range import weight_axis, weight_qtype

_ZETA, _GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (the paper's values)
#: Captured activations per group of layers (bytes): bounds the pass's memory.
_GROUP_BYTES = 512 * 2**20


def _conv_args(node: ir.Node, w: np.ndarray) -> dict[str, Any] | str:
    """The torch conv2d arguments for an ONNX Conv, or why it is not learned."""
    attrs = node.attributes
    if w.ndim != 4:
        return "not a 2-D convolution"
    if attrs.get_string("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return "auto_pad SAME (explicit pads expected after cleanup)"
    pads = list(attrs.get_ints("pads", [0, 0, 0, 0]))
    return {"stride": tuple(attrs.get_ints("strides", [1, 1])), "dilation": tuple(attrs.get_ints("dilations", [1, 1])),
            "groups": attrs.get_int("group", 1), "pad": (pads[1], pads[3], pads[0], pads[2])}


def _prefix(proto: Any, name: str) -> Any:
    """``proto`` cut down to the nodes that compute ``name`` (the rest would run for nothing)."""
    import onnx

    producer = {out: node for node in proto.graph.node for out in node.output}
    needed: set[int] = set()
    stack = [name]
    while stack:
        node = producer.get(stack.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            stack.extend(i for i in node.input if i)
    cut = onnx.ModelProto()
    cut.CopyFrom(proto)
    keep = [n for n in proto.graph.node if id(n) in needed]
    del cut.graph.node[:]
    cut.graph.node.extend(keep)
    used = {i for n in keep for i in n.input}
    kept_init = [t for t in proto.graph.initializer if t.name in used]
    del cut.graph.initializer[:]
    cut.graph.initializer.extend(kept_init)
    del cut.graph.output[:]
    return cut


@dataclass
class _Layer:
    node: ir.Node
    label: str
    w: np.ndarray
    scales: np.ndarray
    axis: int | None
    qmin: int
    qmax: int
    conv: dict[str, Any] | None  # None: a Gemm/MatMul (weight [K, N] after transposition)
    transposed: bool
    #: (bias, (low, high)) when the layer's only consumer is a Relu or Clip: the error that matters
    #: is the one after it (a ReLU6 hides every error below 0 and above 6)
    activation: tuple[np.ndarray | None, tuple[float, float]] | None = None


def _constant_input(node: ir.Node, index: int) -> tuple[bool, np.ndarray | None]:
    """(whether input ``index`` is known before running, its array); an absent input is known (None)."""
    value = node.inputs[index] if len(node.inputs) > index else None
    if value is None:
        return True, None
    array = constant_array(value)
    return array is not None, array


def _activation(node: ir.Node) -> tuple[np.ndarray | None, tuple[float, float]] | None:
    """The bias and clamp bounds of the Relu/Clip that alone consumes ``node``'s output, if any."""
    act = only_reader(node.outputs[0])
    if act is None or act.op_type not in ("Relu", "Clip"):
        return None
    (lo_known, lo), (hi_known, hi) = _constant_input(act, 1), _constant_input(act, 2)
    if act.op_type == "Clip" and not (lo_known and hi_known):
        return None  # bounds computed at run time
    bounds = (0.0, float("inf")) if act.op_type == "Relu" else \
        (-float("inf") if lo is None else float(lo), float("inf") if hi is None else float(hi))
    bias_known, bias = _constant_input(node, 2)
    if not bias_known or (node.op_type == "Gemm" and bias is not None and
                          (bias.ndim != 1 or node.attributes.get_float("beta", 1.0) != 1.0)):
        return None
    return (None if bias is None else np.asarray(bias, np.float32).reshape(-1)), bounds


class _Learner:
    """The soft rounding of one layer and its loss (torch, CPU)."""

    def __init__(self, layer: _Layer, x: np.ndarray, x_q: np.ndarray | None, steps: int, batch: int, lr: float,
                 reg: float, window: int) -> None:
        import torch

        self.torch, self.layer, self.steps, self.batch, self.window = torch, layer, steps, batch, window
        w = layer.w.T if layer.transposed else layer.w
        shape = [1] * w.ndim
        if layer.axis is not None:
            shape[0 if layer.conv is not None else 1] = -1  # a conv's output channels; a [K, N] weight's N
        s = layer.scales.reshape(shape) if layer.axis is not None else layer.scales.reshape(())
        self.w = torch.from_numpy(np.array(w, np.float32))  # a writable copy: torch shares the buffer
        self.s = torch.from_numpy(np.asarray(s, np.float32))
        self.floor = torch.floor(self.w / self.s)
        rest = (self.w / self.s - self.floor).clamp(0.01, 0.99)
        self.v = torch.nn.Parameter(-torch.log((_ZETA - _GAMMA) / (rest - _GAMMA) - 1))  # h(v) = rest
        self.opt = torch.optim.Adam([self.v], lr=lr)
        self.reg = reg
        # the target is op(x, W) on float inputs; the rounding is learnt on the inputs the
        # quantized model gives this layer (x_q), so it also makes up for the error upstream
        self.x, self.x_q = self._prepared(x), self._prepared(x if x_q is None else x_q)
        self.act: tuple[Any, tuple[float, float]] | None = None
        if layer.activation is not None:
            bias, bounds = layer.activation
            along = (1, -1, 1, 1) if layer.conv is not None else (1, -1)  # the output channels
            self.act = (None if bias is None else torch.from_numpy(bias.copy()).reshape(along), bounds)

    def _prepared(self, x: np.ndarray) -> Any:
        if self.layer.conv is not None:
            return self.torch.nn.functional.pad(self.torch.from_numpy(x), self.layer.conv["pad"])
        return self.torch.from_numpy(x.reshape(-1, x.shape[-1]))

    def _h(self) -> Any:
        return (self.torch.sigmoid(self.v) * (_ZETA - _GAMMA) + _GAMMA).clamp(0, 1)

    def _sample(self, rng: np.random.Generator) -> tuple[Any, Any]:
        n = self.x.shape[0]
        pick = rng.choice(n, size=min(self.batch, n), replace=False)
        rows, rows_q = self.x[pick], self.x_q[pick]
        if self.layer.conv is None or self.window <= 0:
            return rows, rows_q
        # a random window of the output (its receptive field of the input) keeps big layers cheap
        conv, (kh, kw) = self.layer.conv, self.w.shape[2:]
        (sh, sw), (dh, dw) = conv["stride"], conv["dilation"]
        need_h, need_w = (self.window - 1) * sh + dh * (kh - 1) + 1, (self.window - 1) * sw + dw * (kw - 1) + 1
        h, w = rows.shape[2:]
        top = int(rng.integers(0, max(h - need_h, 0) + 1)) // sh * sh
        left = int(rng.integers(0, max(w - need_w, 0) + 1)) // sw * sw
        return rows[:, :, top:top + need_h, left:left + need_w], rows_q[:, :, top:top + need_h, left:left + need_w]

    def _apply(self, x: Any, w: Any) -> Any:
        f = self.torch.nn.functional
        if self.layer.conv is None:
            y = x @ w
        else:
            conv = self.layer.conv
            y = f.conv2d(x, w, stride=conv["stride"], dilation=conv["dilation"], groups=conv["groups"])
        if self.act is None:
            return y
        bias, (lo, hi) = self.act
        if bias is not None:
            y = y + bias
        return y.clamp(min=None if lo == -float("inf") else lo, max=None if hi == float("inf") else hi)

    def learn(self, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
        """(integer weights, output error before, after) on the captured inputs."""
        torch = self.torch
        lo, hi = self.layer.qmin, self.layer.qmax
        warmup = int(0.2 * self.steps)
        for step in range(self.steps):
            x, x_q = self._sample(rng)
            soft = self.s * torch.clamp(self.floor + self._h(), lo, hi)
            with torch.no_grad():
                target = self._apply(x, self.w)
            recon = (target - self._apply(x_q, soft)).pow(2).sum(1).mean()
            loss = recon
            if step >= warmup:
                beta = 20 + (2 - 20) * (step - warmup) / max(self.steps - warmup, 1)
                loss = recon + self.reg * (1 - (2 * self._h() - 1).abs().pow(beta)).sum()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        with torch.no_grad():
            q = torch.clamp(self.floor + (self._h() >= 0.5).float(), lo, hi)
            nearest = torch.clamp(torch.round(self.w / self.s), lo, hi)
            x, x_q = self.x[:16], self.x_q[:16]
            target = self._apply(x, self.w)
            before = float((target - self._apply(x_q, self.s * nearest)).pow(2).mean())
            after = float((target - self._apply(x_q, self.s * q)).pow(2).mean())
            if after > before:  # learnt worse than nearest on these rows: keep nearest
                q, after = nearest, before
        out = q.numpy().astype(np.int64)
        return (out.T if self.layer.transposed else out), before, after


@dataclass(frozen=True)
class AdaRound(Pass):
    """Learned rounding of quantized Conv/Gemm weights (see the module docstring)."""

    name = "adaround"
    rewrites_graph = False
    keeps_plan = True
    reads_calibration_data = True
    samples: int = 128
    steps: int = 400
    batch: int = 8
    lr: float = 0.01
    reg: float = 0.01
    window: int = 16  # output rows/columns a Conv step sees (0: the whole map)
    seconds: float = 600.0
    seed: int = 0
    #: What a layer learns on: the inputs the model quantized so far gives it (``quantized``), or
    #: its float inputs (``float``: faster, one capture per group of layers).
    inputs: str = "quantized"
    #: Reconstruct after the layer's Relu/Clip (with its bias) when that alone consumes it.
    activation: bool = True

    def requires(self, qmodel: QModel) -> list[str]:
        """A current plan and calibration data."""
        return qmodel.plan_problems() + ([] if qmodel.calibration is not None else ["no calibration data"])

    def run(self, qmodel: QModel) -> PassResult:
        """Learn every eligible layer's rounding within the time limit."""
        try:
            import torch
        except ImportError as e:
            raise PassError("adaround needs torch (pip install 'irq[torch]')") from e
        torch.manual_seed(self.seed)
        layers, skipped = self._layers(qmodel)
        if self.activation:
            for layer in layers:
                layer.activation = _activation(layer.node)
        assert qmodel.calibration is not None
        data = qmodel.calibration.head(self.samples) if self.samples else qmodel.calibration
        if self.inputs not in ("float", "quantized"):
            raise PassError(f"adaround: inputs must be float or quantized, not {self.inputs!r}")
        rng, start, done, errors = np.random.default_rng(self.seed), time.perf_counter(), [], []
        for group in self._groups(layers, data):
            names = [layer.node.inputs[0].name or "" for layer in group]  # type: ignore[union-attr]
            inputs = self._capture(qmodel.to_proto(), names, data)
            for layer in group:
                if time.perf_counter() - start > self.seconds:
                    skipped[layer.label] = f"time limit ({self.seconds:g} s) reached: round to nearest"
                    continue
                x = inputs[layer.node.inputs[0].name or ""]  # type: ignore[union-attr]
                # captured just before learning, so every earlier layer's learnt rounding is in
                x_q = self._quantized_input(qmodel, layer, data) if self.inputs == "quantized" else None
                learner = _Learner(layer, x, x_q, self.steps, self.batch, self.lr, self.reg, self.window)
                q, before, after = learner.learn(rng)
                qmodel.weight_scales[layer.label] = layer.scales
                qmodel.rounded_weights[layer.label] = q.astype(weight_qtype(layer.node, qmodel.scheme).numpy_dtype)
                if x_q is not None and after < before:  # a layer that fell back to nearest keeps bias-correct
                    qmodel.output_matched.add(layer.label)
                done.append(layer.label)
                errors.append(after / before if before > 0 else 1.0)
            del inputs
        qmodel.analysis.record(self.name, layers=len(done), skipped=skipped, samples=len(data), steps=self.steps,
                               seconds=round(time.perf_counter() - start, 2),
                               mean_error_ratio=float(np.mean(errors)) if errors else 1.0)
        return PassResult(qmodel, bool(done))

    @staticmethod
    def _layers(qmodel: QModel) -> tuple[list[_Layer], dict[str, str]]:
        layers, skipped = [], {}
        for node in qmodel.graph:
            label = node_label(node)
            d = qmodel.plan.get(label)
            if d is None or not d.precision.has_qdq_weights or node.op_type not in ("Conv", "Gemm", "MatMul"):
                continue
            w = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
            x = node.inputs[0]
            if w is None or w.dtype != np.float32 or x is None or x.const_value is not None or w.ndim < 2:
                continue
            transposed = node.op_type == "Gemm" and bool(node.attributes.get_int("transB", 0))
            conv = _conv_args(node, w) if node.op_type == "Conv" else None
            if isinstance(conv, str) or (node.op_type == "MatMul" and w.ndim != 2) or \
                    (node.op_type == "Gemm" and node.attributes.get_int("transA", 0) != 0):
                skipped[label] = conv if isinstance(conv, str) else "not a plain 2-D weight"
                continue
            axis = weight_axis(node, w.ndim) if d.per_channel else None
            qtype = weight_qtype(node, qmodel.scheme)
            scales = qmodel.weight_scales.get(label)
            scales = weight_scales(w, axis, qtype) if scales is None else scales
            layers.append(_Layer(node, label, w, np.asarray(scales, np.float32), axis, qtype.qmin, qtype.qmax, conv,
                                 transposed))
        return layers, skipped

    @staticmethod
    def _groups(layers: list[_Layer], data: Any) -> list[list[_Layer]]:
        """Consecutive layers whose captured inputs fit in ``_GROUP_BYTES`` together."""
        groups: list[list[_Layer]] = [[]]
        used = 0
        for layer in layers:
            shape = layer.node.inputs[0].shape  # type: ignore[union-attr]
            per_sample = int(np.prod([d if isinstance(d, int) else 1 for d in (shape or [])[1:]])) * 4
            size = per_sample * len(data)
            if groups[-1] and used + size > _GROUP_BYTES:
                groups.append([])
                used = 0
            groups[-1].append(layer)
            used += size
        return [g for g in groups if g]

    @staticmethod
    def _quantized_input(qmodel: QModel, layer: _Layer, data: Any) -> np.ndarray | None:
        """``layer``'s input in the model quantized as planned, with the roundings learnt so far."""
        from irq.passes.insert_qdq import InsertQDQ

        current = InsertQDQ().run(qmodel.clone()).model.to_proto()
        reader = next((n for n in current.graph.node if n.name == layer.label), None)
        if reader is None:
            return None
        name = reader.input[0]
        return AdaRound._capture(_prefix(current, name), [name], data)[name]

    @staticmethod
    def _capture(proto: Any, names: list[str], data: Any) -> dict[str, np.ndarray]:
        """The values ``names`` of ``proto`` over ``data``, from one run."""
        names = list(dict.fromkeys(names))
        proto = with_outputs(proto, names)
        index = [[o.name for o in proto.graph.output].index(n) for n in names]
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for _, outs in batch_outputs(proto, data):
            for n, i in zip(names, index, strict=True):
                parts[n].append(np.asarray(outs[i], np.float32))
        return {n: np.concatenate(p) for n, p in parts.items()}
