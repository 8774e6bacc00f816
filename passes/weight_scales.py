"""Weight-scale search: clip each weight's range where rounding error says so.

Max-abs scales spend the integer grid on the one largest weight; with 4 bits (or one scale for
a whole tensor) that leaves most weights on two or three levels. Per slice (output channel, or
the tensor), this pass tries scales from ``low`` x to 1 x the max-abs scale and keeps the one
whose quantized weights are nearest the float ones in squared error, weighting each input
channel by the mean square of the activation it multiplies when calibration data is given
(the layer's output error, to a diagonal approximation), else equally. The scales land in
``qmodel.weight_scales``; bias-correct and insert-qdq quantize with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from irq.ir.model import QModel, constant_array, node_label
from irq.pipeline.infra import Pass, PassResult
from irq.quant.arith import weight_scales
from irq.quant.probes import channel_energy
from irq.quant.spec import QType
from irq.quant.weight_range import weight_axis, weight_qtype

_OPS = ("Conv", "Gemm", "MatMul")


def search_scales(w: np.ndarray, axis: int | None, qtype: QType, low: float = 0.5, steps: int = 50,
                  importance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scales, error ratio) per slice: the clipped scales with the least (weighted) squared error.

    ``importance`` broadcasts against ``w`` (e.g. an input channel's mean square activation);
    the ratio is each slice's error over the max-abs scales' error (1.0: nothing better found).
    """
    base = weight_scales(w, axis, qtype).astype(np.float64)
    rows = (np.moveaxis(w, axis, 0) if axis is not None else w[None]).reshape(base.size, -1).astype(np.float64)
    weight = np.ones_like(w, np.float64) if importance is None else np.broadcast_to(importance, w.shape)
    weight = (np.moveaxis(weight, axis, 0) if axis is not None else weight[None]).reshape(rows.shape)

    def error(scale: np.ndarray) -> np.ndarray:
        q = np.clip(np.rint(rows / scale[:, None]), qtype.qmin, qtype.qmax) * scale[:, None]
        return ((rows - q) ** 2 * weight).sum(axis=1)

    first = best_err = error(base)
    best = base.copy()
    for ratio in np.linspace(low, 1.0, steps, endpoint=False):
        err = error(base * ratio)
        better = err < best_err
        best, best_err = np.where(better, base * ratio, best), np.where(better, err, best_err)
    return best.astype(np.float32), np.where(first > 0, best_err / np.maximum(first, 1e-30), 1.0)


def _input_energy(node: ir.Node, w: np.ndarray, energy: dict[str, np.ndarray]) -> np.ndarray | None:
    """The mean square of each input channel of ``node``, shaped to broadcast against its weight."""
    x = node.inputs[0]
    e = energy.get(x.name or "") if x is not None else None
    if e is None:
        return None
    if node.op_type == "Conv":
        group = node.attributes.get_int("group", 1)
        per_group = w.shape[1]
        if e.size != per_group * group:
            return None
        # output channel o of group g reads input channels g*per_group ... (g+1)*per_group - 1
        rows = e.reshape(group, per_group).repeat(w.shape[0] // group, axis=0)
        return rows.reshape(w.shape[0], per_group, *([1] * (w.ndim - 2)))
    trans_b = node.op_type == "Gemm" and bool(node.attributes.get_int("transB", 0))
    if w.ndim != 2 or e.size != (w.shape[1] if trans_b else w.shape[0]):
        return None
    return e[None, :] if trans_b else e[:, None]


def _reduced_axes(node: ir.Node) -> tuple[int, ...]:
    """The axes of ``node``'s input that are not its channels (empty: unknown, left unweighted)."""
    w = constant_array(node.inputs[1])
    x = node.inputs[0]
    if node.op_type == "Conv" and w is not None:
        return (0, *range(2, w.ndim))
    if node.op_type == "Gemm" and not node.attributes.get_int("transA", 0):
        return (0,)
    if node.op_type == "MatMul" and x is not None and x.shape is not None and len(x.shape) >= 2:
        return tuple(range(len(x.shape) - 1))
    return ()


@dataclass(frozen=True)
class WeightScales(Pass):
    """Choose each quantized layer's weight scales by rounding error (see the module docstring)."""

    name = "weight-scales"
    reads_calibration_data = True
    rewrites_graph = False
    keeps_plan = True
    low: float = 0.5
    steps: int = 50
    weighted: bool = True
    samples: int = 64

    def requires(self, qmodel: QModel) -> list[str]:
        """A current plan: the granularity and integer type decide the grid."""
        return qmodel.plan_problems()

    def run(self, qmodel: QModel) -> PassResult:
        """Search every planned Conv/Gemm/MatMul with a constant float weight."""
        layers = [n for n in qmodel.graph if self._searched(qmodel, n)]
        energy: dict[str, np.ndarray] = {}
        if self.weighted and qmodel.calibration is not None and layers:
            axes = [(x.name or "", a) for n in layers if (x := n.inputs[0]) is not None and (a := _reduced_axes(n))]
            data = qmodel.calibration.head(self.samples) if self.samples else qmodel.calibration
            energy = channel_energy(qmodel.to_proto(), axes, data)
        changed, ratios = 0, []
        for node in layers:
            label = node_label(node)
            w = constant_array(node.inputs[1])
            assert w is not None
            axis = weight_axis(node, w.ndim) if qmodel.plan[label].per_channel else None
            scales, ratio = search_scales(w, axis, weight_qtype(node, qmodel.scheme), self.low, self.steps,
                                          _input_energy(node, w, energy))
            qmodel.weight_scales[label] = scales
            changed += int(np.any(ratio < 1.0))
            ratios.append(float(np.mean(ratio)))
        qmodel.analysis.record(self.name, layers=len(layers), clipped=changed, weighted=bool(energy),
                               mean_error_ratio=float(np.mean(ratios)) if ratios else 1.0)
        return PassResult(qmodel, changed > 0)

    @staticmethod
    def _searched(qmodel: QModel, node: ir.Node) -> bool:
        decision = qmodel.plan.get(node_label(node))
        if decision is None or not decision.precision.has_qdq_weights or node.op_type not in _OPS:
            return False
        w = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
        return w is not None and w.dtype == np.float32 and w.ndim >= 2 and node.inputs[0] is not None
