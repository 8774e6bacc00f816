"""Pad folding: a zero constant Pad on the spatial axes feeding only Convs becomes the Convs' own pads.

TensorFlow-exported models (EfficientNet-Lite, MobileNets, MediaPipe) spell SAME padding as an
explicit Pad before each strided Conv. Left alone, it costs a pass over the activation and, once
quantized, its own Q/DQ pair; onnxruntime's pre-processing folds it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from irq.ir.model import QModel, constant_array, node_label
from irq.pipeline.infra import Pass, PassResult


def _spatial_pads(pad: ir.Node) -> list[int] | None:
    """The Pad's [begins..., ends...] over the spatial axes, if it is a zero constant pad of those only."""
    if pad.attributes.get_string("mode", "constant") != "constant" or len(pad.inputs) > 3:
        return None
    if len(pad.inputs) >= 2:
        pads = constant_array(pad.inputs[1])
    else:  # opset < 11: pads is an attribute
        attr = pad.attributes.get("pads")
        pads = np.asarray(attr.as_ints()) if attr is not None else None
    if pads is None:
        return None
    if len(pad.inputs) == 3 and pad.inputs[2] is not None:
        value = constant_array(pad.inputs[2])
        if value is None or np.any(value != 0):
            return None
    elif len(pad.inputs) < 2 and pad.attributes.get_float("value", 0.0) != 0.0:
        return None
    widths = [int(p) for p in np.asarray(pads).ravel()]
    rank = len(widths) // 2
    if rank < 3 or any(p < 0 for p in widths) or widths[0] or widths[1] or widths[rank] or widths[rank + 1]:
        return None
    return widths[2:rank] + widths[rank + 2:]


def _conv_consumers(value: ir.Value) -> list[ir.Node] | None:
    """The Convs that read ``value`` as their data input, when nothing else reads it."""
    uses = list(value.uses())
    if not uses or value.is_graph_output():
        return None
    convs = [node for node, index in uses]
    if any(n.op_type != "Conv" or n.domain != "" or index != 0 for n, index in uses):
        return None
    if any(n.attributes.get_string("auto_pad", "NOTSET") != "NOTSET" for n in convs):
        return None
    return convs


def _conv_pads(conv: ir.Node, size: int) -> list[int]:
    attr = conv.attributes.get("pads")
    return list(attr.as_ints()) if attr is not None else [0] * size


@dataclass(frozen=True)
class FoldPad(Pass):
    """Fold each zero spatial Pad into the Convs that alone read it."""

    name = "fold-pad"

    def run(self, qmodel: QModel) -> PassResult:
        """Fold every eligible Pad; leave the rest untouched."""
        folded = []
        for pad in list(qmodel.graph):
            if pad.op_type != "Pad" or pad.domain != "" or len(pad.outputs) != 1:
                continue
            extra = _spatial_pads(pad)
            convs = _conv_consumers(pad.outputs[0]) if extra is not None else None
            if extra is None or convs is None:
                continue
            current = [_conv_pads(conv, len(extra)) for conv in convs]
            if any(len(c) != len(extra) for c in current):
                continue
            for conv, pads in zip(convs, current, strict=True):
                conv.attributes["pads"] = ir.AttrInt64s("pads", [a + b for a, b in zip(pads, extra, strict=True)])
                conv.replace_input_with(0, pad.inputs[0])
            qmodel.graph.remove(pad, safe=True)
            folded.append(node_label(pad))
        qmodel.analysis.record(self.name, folded=len(folded))
        return PassResult(qmodel, bool(folded))

    def ensures(self, qmodel: QModel) -> list[str]:
        """No foldable Pad is left in front of a Conv."""
        left = [node_label(n) for n in qmodel.graph if n.op_type == "Pad" and _spatial_pads(n) is not None
                and _conv_consumers(n.outputs[0]) is not None]
        return [f"foldable Pads left: {', '.join(left[:5])}"] if left else []
