"""FP16 conversion: float16 weights and compute, float32 graph I/O unless asked otherwise.

onnxconverter-common's converter does the type surgery (and keeps ops without fp16 kernels
in float32); this pass feeds it the plan, so layers planned fp32 stay fp32.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import onnx_ir as ir
from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

from irq.ir import QModel
from irq.pass_infra import Pass, PassResult
from irq.qspec import Precision


@dataclass(frozen=True)
class ToFP16(Pass):
    """Convert the graph to float16; ``keep-io=false`` makes inputs/outputs float16 too."""

    name = "to-fp16"
    keep_io: bool = True

    def run(self, qmodel: QModel) -> PassResult:
        """Convert, keeping the nodes the plan pins to fp32 in float32."""
        keep = [name for name, d in qmodel.plan.items() if d.precision == Precision.FP32]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # it warns for every clamped tiny weight
            proto = convert_float_to_float16(qmodel.to_proto(), keep_io_types=self.keep_io,
                                             op_block_list=DEFAULT_OP_BLOCK_LIST, node_block_list=keep,
                                             disable_shape_infer=False)
        qmodel.model = ir.serde.deserialize_model(proto)
        qmodel.analysis["fp16"] = {"kept_fp32_nodes": len(keep)}
        return PassResult(qmodel, True)
