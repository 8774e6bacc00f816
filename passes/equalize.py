"""Cross-layer equalization: even out per-channel weight ranges across consecutive layers.

For a layer A whose output channel c reaches a layer B only through ops that commute with a
positive per-channel scale (ReLU, LeakyReLU, PReLU, max/average pooling, Flatten into a Gemm),
dividing A's channel c (weights and bias) by s_c and multiplying B's input channel c by s_c
leaves the model's function unchanged. With s_c = sqrt(r_A(c) / r_B(c)), both channels end
with the range sqrt(r_A r_B), so one scale per tensor (or 4-bit weights) wastes less of its
grid (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction",
2019). Pairs are equalized in graph order, a few rounds so that chains settle.

``by=activations`` balances what per-channel weights leave exposed instead: the tensor between
A and B, which has one int8 scale for all its channels. From one float run over the calibration
data, s_c = act(c)^alpha / r_B(c)^(1 - alpha) (act: the largest magnitude of channel c where B
reads it), so the channels' ranges come closer at a bounded cost to B's weight columns; a
depthwise B has one weight scale per channel, so its cost is nil and alpha is 1. A's per-channel
weights absorb 1/s_c. The function is unchanged as above; one round suffices, since rescaling a
pair does not change any other pair's tensor, and every s is computed from the weights as they
were, so the graph's node order does not change the result. It is not the default: on seven
corpus models it beat ``by=weights`` in one run and lost on three in another (bench/RESULTS.md).
A bias shared by several layers is given each its own copy first (exporters share one all-zero
bias).

Clip (ReLU6) does not commute with a per-channel scale: its bound would have to move with the
channel, and ONNX's Clip takes one bound. Such pairs are skipped and reported. (Replacing
ReLU6 by ReLU first, as AIMET offers, changed EfficientNet-Lite0's logits by up to 10.6 on
logits of magnitude 11 here: not an equalization.) Run before calibrate: the ranges of the
activations between A and B change.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from irq.ir.edit import Namer, add_initializer
from irq.ir.model import QModel, constant_array, node_label, only_reader
from irq.pipeline.infra import Pass, PassResult
from irq.quant.probes import channel_absmax

#: Ops between A and B that commute with a positive scale on each channel (axis 1).
_COMMUTING = frozenset({"Relu", "LeakyRelu", "PRelu", "MaxPool", "AveragePool", "GlobalAveragePool",
                        "GlobalMaxPool", "Identity"})


def _private_constant(value: ir.Value | None) -> np.ndarray | None:
    """A float constant that only one node reads (so rescaling it changes nobody else)."""
    if value is None or value.const_value is None or len(list(value.uses())) != 1:
        return None
    array = value.const_value.numpy()
    return array if array.dtype == np.float32 else None


@dataclass
class _Pair:
    """A's output channels, and B's weight viewed so that axis ``b_axis`` holds B's input channels."""

    a: ir.Node
    b: ir.Node
    a_weight: np.ndarray  # output channels on axis 0
    a_transposed: bool  # Gemm with transB=0 keeps A's output channels on axis 1
    b_view: np.ndarray
    b_axis: int
    flattened: bool = False


def _b_view(b: ir.Node, channels: int, flattened: bool) -> tuple[np.ndarray, int] | str:
    """B's weight reshaped so one axis is A's channels, or why B cannot be equalized."""
    if b.op_type not in ("Conv", "Gemm"):
        return f"the next op is {b.op_type}"
    w = _private_constant(b.inputs[1]) if len(b.inputs) > 1 else None
    if w is None:
        return "the next layer's weight is not a constant of its own"
    if b.op_type == "Conv" and not flattened:
        group = b.attributes.get_int("group", 1)
        if group == 1 and w.shape[1] == channels:
            return w, 1
        if group == channels and w.shape[1] == 1:
            return w.reshape(channels, w.shape[0] // channels, *w.shape[1:]), 0  # depthwise
        return "grouped convolution"
    if b.op_type == "Gemm" and b.attributes.get_float("alpha", 1.0) > 0 and not b.attributes.get_int("transA", 0):
        k = w.shape[1] if b.attributes.get_int("transB", 0) else w.shape[0]
        if k % channels:
            return "the next Gemm's inputs do not split into the channels"
        if b.attributes.get_int("transB", 0):
            return w.reshape(w.shape[0], channels, k // channels), 1
        return w.reshape(channels, k // channels, w.shape[1]), 0
    return "the next layer is a Conv after Flatten"


def _find_pair(a: ir.Node) -> _Pair | str:
    """The layer A feeds through commuting ops, viewed for equalization, or why there is none."""
    w = _private_constant(a.inputs[1]) if len(a.inputs) > 1 else None
    if w is None or w.ndim < 2:
        return "weight is not a constant of its own"
    transposed = a.op_type == "Gemm" and a.attributes.get_int("transB", 0) == 0
    if a.op_type == "Gemm" and (a.attributes.get_int("transA", 0) != 0 or a.attributes.get_float("alpha", 1.0) <= 0):
        return "Gemm with transA or a negative alpha"
    if len(a.inputs) > 2 and a.inputs[2] is not None and _private_constant(a.inputs[2]) is None:
        return "bias is not a constant of its own"
    channels = w.shape[1] if transposed else w.shape[0]
    node, flattened = only_reader(a.outputs[0]), False
    while node is not None and (node.op_type in _COMMUTING or node.op_type == "Flatten"):
        slope = constant_array(node.inputs[1]) if node.op_type == "PRelu" else None
        if slope is not None and slope.size not in (1, channels):
            return "PReLU slope that is not per channel"
        if node.op_type == "Flatten":
            if node.attributes.get_int("axis", 1) != 1:
                return "Flatten on another axis"
            flattened = True
        node = only_reader(node.outputs[0])
    if node is None:
        return "its output is read by several nodes or is a model output"
    if node.op_type == "Clip":
        return "Clip (ReLU6) between the layers: its one bound cannot move per channel"
    view = _b_view(node, channels, flattened)
    if isinstance(view, str):
        return view
    return _Pair(a, node, w.T if transposed else w, transposed, *view, flattened=flattened)


def _ranges(array: np.ndarray, axis: int) -> np.ndarray:
    return np.abs(array).max(axis=tuple(i for i in range(array.ndim) if i != axis)).astype(np.float64)


#: A pair whose scales all lie within 0.1 % of 1 is equalized already (so a second run is a no-op).
_SETTLED = 1e-3


def _weight_scales(pair: _Pair) -> np.ndarray:
    r_a, r_b = _ranges(pair.a_weight, 0), _ranges(pair.b_view, pair.b_axis)
    return np.where((r_a > 0) & (r_b > 0), np.sqrt(r_a / np.maximum(r_b, 1e-30)), 1.0)


def _activation_scales(pair: _Pair, act: np.ndarray, alpha: float) -> np.ndarray:
    r_b = _ranges(pair.b_view, pair.b_axis)
    if pair.b.op_type == "Conv" and pair.b_axis == 0:  # depthwise B: its per-channel scales absorb s
        alpha = 1.0
    s = np.where((act > 0) & (r_b > 0), act ** alpha / np.maximum(r_b, 1e-30) ** (1 - alpha), 1.0)
    return s / np.exp(np.mean(np.log(s)))  # only the ratios matter; keep the weights' magnitudes


def _equalize(pair: _Pair, s: np.ndarray) -> float:
    """Rescale one pair's initializers by ``s``; return the largest |log s| (0: settled, nothing written)."""
    s = np.clip(s, 1e-4, 1e4)
    moved = float(np.max(np.abs(np.log(s)), initial=0.0))
    if moved < _SETTLED:
        return 0.0
    shape = [1] * pair.a_weight.ndim
    shape[0] = -1
    a_w = (pair.a_weight / s.reshape(shape)).astype(np.float32)
    b_shape = [1] * pair.b_view.ndim
    b_shape[pair.b_axis] = -1
    b_w = (pair.b_view * s.reshape(b_shape)).astype(np.float32)
    _replace(pair.a.inputs[1], a_w.T if pair.a_transposed else a_w)
    _replace(pair.b.inputs[1], b_w.reshape(constant_array(pair.b.inputs[1]).shape))  # type: ignore[union-attr]
    if len(pair.a.inputs) > 2 and pair.a.inputs[2] is not None:
        bias = constant_array(pair.a.inputs[2])
        assert bias is not None
        _replace(pair.a.inputs[2], (bias / s.reshape(bias.shape)).astype(np.float32))
    return moved


def _own_biases(qmodel: QModel) -> int:
    """Give every Conv/Gemm whose constant bias other nodes also read a copy of its own."""
    namer, copied = Namer(qmodel.graph), 0
    for node in qmodel.graph:
        bias = node.inputs[2] if node.op_type in ("Conv", "Gemm") and len(node.inputs) > 2 else None
        if bias is None or bias.const_value is None or len(list(bias.uses())) < 2:
            continue
        array = bias.const_value.numpy()
        if array.dtype != np.float32:
            continue
        node.replace_input_with(2, add_initializer(qmodel.graph, namer, array.copy(), f"{bias.name}_own"))
        copied += 1
    return copied


def _replace(value: ir.Value | None, array: np.ndarray) -> None:
    assert value is not None and value.const_value is not None
    value.const_value = ir.tensor(array, name=value.const_value.name)


@dataclass(frozen=True)
class Equalize(Pass):
    """Cross-layer equalization of Conv/Gemm pairs (see the module docstring).

    Options: ``by`` (weights, activations), ``alpha`` (activations: how much of the
    balance the tensor gets), ``samples`` (activations: calibration samples measured), ``rounds``
    (weights: passes over the graph until the scales settle).
    """

    name = "equalize"
    reads_calibration_data = True
    rounds: int = 20
    by: str = "weights"
    alpha: float = 0.5
    samples: int = 64

    def __post_init__(self) -> None:
        if self.by not in ("weights", "activations"):
            raise ValueError(f"by must be weights or activations, not {self.by!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError("alpha must be in [0, 1]")

    def run(self, qmodel: QModel) -> PassResult:
        """Equalize every pair found; record the pairs and why the other layers were skipped."""
        by = self.by if qmodel.calibration is not None else "weights"
        copied = _own_biases(qmodel)
        pairs: list[str] = []
        skipped: Counter[str] = Counter()
        found: list[_Pair] = []
        for node in list(qmodel.graph):
            if node.op_type not in ("Conv", "Gemm"):
                continue
            pair = _find_pair(node)
            if isinstance(pair, str):
                skipped[pair] += 1
                continue
            found.append(pair)
            pairs.append(f"{node_label(pair.a)} -> {node_label(pair.b)}")
        changed, rounds = copied > 0, 0
        if by == "activations" and found:
            changed |= self._balance_activations(qmodel, found) > 0
            rounds = 1
        else:
            rounds = self._balance_weights(qmodel)
            changed |= rounds > 0
        qmodel.analysis.record(self.name, by=by, pairs=pairs, skipped=dict(skipped), rounds=rounds,
                               biases_copied=copied)
        return PassResult(qmodel, changed)

    def _balance_weights(self, qmodel: QModel) -> int:
        """Equalize weight ranges until the scales settle; return the rounds that moved something."""
        for done in range(self.rounds):
            moved = 0.0
            for node in list(qmodel.graph):
                pair = _find_pair(node) if node.op_type in ("Conv", "Gemm") else ""
                if not isinstance(pair, str):
                    moved = max(moved, _equalize(pair, _weight_scales(pair)))
            if moved == 0:
                return done
        return self.rounds

    def _balance_activations(self, qmodel: QModel, found: list[_Pair]) -> float:
        assert qmodel.calibration is not None
        data = qmodel.calibration.head(self.samples) if self.samples else qmodel.calibration
        # The tensor B reads; after Flatten its channels are interleaved, so read A's output there.
        where = [p.a.outputs[0] if p.flattened else p.b.inputs[0] for p in found]
        values = {v.name or "": (0, *range(2, len(v.shape))) if v.shape is not None and len(v.shape) > 2 else (0,)
                  for v in where if v is not None}
        maxima = channel_absmax(qmodel.to_proto(), list(values.items()), data)
        # Every scale from the weights as they were, so the result does not depend on the order
        # the pairs are visited in (B of one pair is often A of the next); then each is applied
        # to fresh arrays, since an earlier pair may have rescaled this pair's layers.
        scales = []
        for pair, value in zip(found, where, strict=True):
            act = maxima[value.name or ""].reshape(-1).astype(np.float64)  # type: ignore[union-attr]
            scales.append(_activation_scales(pair, act, self.alpha) if act.shape[0] == pair.a_weight.shape[0]
                          else None)
        moved = 0.0
        for old, s in zip(found, scales, strict=True):
            fresh = _find_pair(old.a)
            if s is not None and not isinstance(fresh, str):
                moved = max(moved, _equalize(fresh, s))
        return moved
