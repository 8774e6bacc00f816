"""SmoothQuant: move activation outliers into the weights of the MatMuls that read them.

A transformer's activations carry a few channels hundreds of times larger than the rest, so one
int8 scale per tensor leaves the others a level or two; its weights are tame. For a tensor X
read by MatMuls with constant weights W (the query, key and value projections share one X),
dividing channel j of X by s_j and multiplying row j of every W by s_j leaves X W unchanged;
with s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) both sides end with ranges of the same order
(Xiao et al., "SmoothQuant", 2023). X / s is an explicit Mul, since X also feeds other ops (the
residual Add) that must see it unscaled. Channel maxima come from one float run over the
calibration data. Run before calibrate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from irq.ir.edit import Namer, add_initializer, new_node
from irq.ir.model import QModel, constant_array
from irq.pipeline.infra import Pass, PassResult
from irq.quant.probes import channel_absmax


def _groups(graph: ir.Graph) -> dict[ir.Value, list[ir.Node]]:
    """Each float activation with the MatMuls that read it as input 0 through a private 2-D weight."""
    groups: dict[ir.Value, list[ir.Node]] = {}
    for node in graph:
        if node.op_type != "MatMul" or node.domain != "" or len(node.inputs) != 2:
            continue
        x, w_value = node.inputs
        w = constant_array(w_value)
        if x is None or x.const_value is not None or w is None or w.ndim != 2 or w.dtype != np.float32:
            continue
        if len(list(w_value.uses())) != 1 or x.shape is None or len(x.shape) < 2:  # type: ignore[union-attr]
            continue
        groups.setdefault(x, []).append(node)
    return groups


@dataclass(frozen=True)
class SmoothQuant(Pass):
    """Per-channel smoothing of MatMul inputs into their weights (see the module docstring)."""

    name = "smooth-quant"
    reads_calibration_data = True
    alpha: float = 0.5
    samples: int = 64

    def run(self, qmodel: QModel) -> PassResult:
        """Smooth every group; without calibration data, say so and change nothing."""
        groups = _groups(qmodel.graph)
        if not groups or qmodel.calibration is None:
            why = "no calibration data" if qmodel.calibration is None else "no MatMul with a constant weight"
            qmodel.analysis.record(self.name, groups=0, skipped=why)
            return PassResult(qmodel, False)
        data = qmodel.calibration.head(self.samples) if self.samples else qmodel.calibration
        axes = {x.name or "": tuple(range(len(x.shape) - 1)) for x in groups}  # type: ignore[arg-type]
        maxima = channel_absmax(qmodel.to_proto(), list(axes.items()), data)
        namer, largest, done = Namer(qmodel.graph), 1.0, 0
        for x, readers in groups.items():
            act = maxima[x.name or ""]
            weights = [constant_array(n.inputs[1]) for n in readers]
            w_max = np.max([np.abs(w).max(axis=1) for w in weights if w is not None], axis=0)
            if act.shape != w_max.shape:
                continue
            s = np.where((act > 0) & (w_max > 0),
                         act ** self.alpha / np.maximum(w_max, 1e-12) ** (1 - self.alpha), 1.0)
            s = np.clip(s, 1e-5, 1e5).astype(np.float32)
            scale = add_initializer(qmodel.graph, namer, (1.0 / s).astype(np.float32), f"{x.name}_smooth")
            mul = new_node(namer, "Mul", [x, scale], f"{x.name}_smoothed")
            mul.outputs[0].dtype, mul.outputs[0].shape = ir.DataType.FLOAT, x.shape
            qmodel.graph.insert_before(readers[0], mul)
            for node, w in zip(readers, weights, strict=True):
                assert w is not None
                w_value = node.inputs[1]
                assert w_value is not None and w_value.const_value is not None
                w_value.const_value = ir.tensor((w * s[:, None]).astype(np.float32), name=w_value.const_value.name)
                node.replace_input_with(0, mul.outputs[0])
            largest, done = max(largest, float(s.max()), float(1 / s.min())), done + 1
        qmodel.analysis.record(self.name, groups=done, matmuls=sum(len(r) for r in groups.values()),
                               largest_factor=largest, alpha=self.alpha)
        return PassResult(qmodel, done > 0)
