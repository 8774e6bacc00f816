"""7-bit GEMM weights where x86 int8 kernels would saturate; depthwise convs keep 8 bits."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from irq import zoo
from irq.data import DataSet
from irq.frontends import import_model
from irq.frontends.onnx_file import from_proto
from irq.ir.ort import make_session
from irq.pipeline.prepare import quantize
from irq.pipeline.targets import get_target
from irq.quant.spec import QType, Scheme
from irq.quant.weight_range import host_int8_saturates, reduces_range


def _dw_then_pointwise() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(8, 1, 3, 3)).astype(np.float32), "dw"),
             numpy_helper.from_array(rng.normal(size=(4, 8, 1, 1)).astype(np.float32), "pw")]
    nodes = [helper.make_node("Conv", ["x", "dw"], ["a"], group=8, pads=[1, 1, 1, 1], name="depthwise"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "pw"], ["y"], name="pointwise")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, ["N", 8, 6, 6])],
                              [helper.make_tensor_value_info("y", 1, ["N", 4, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def _weight_codes(qmodel) -> dict[str, int]:
    """Largest |integer| of each layer's weight, by layer name."""
    out = {}
    for node in qmodel.graph:
        if node.op_type == "Conv":
            dq = node.inputs[1].producer()
            out[node.name] = int(np.abs(dq.inputs[0].const_value.numpy().astype(np.int32)).max())
    return out


@pytest.mark.parametrize("setting,expect_pointwise", [("yes", 63), ("no", 127)])
def test_reduced_range_spares_depthwise(setting, expect_pointwise):
    x = np.random.default_rng(1).normal(size=(16, 8, 6, 6)).astype(np.float32)
    target = get_target("onnx-int8")
    target = dataclasses.replace(target, scheme=dataclasses.replace(target.scheme, reduce_range=setting))
    q = quantize(from_proto(_dw_then_pointwise(), "dwpw"), target, DataSet({"x": x}))
    codes = _weight_codes(q)
    assert codes == {"depthwise": 127, "pointwise": expect_pointwise}
    assert q.analysis.of("insert-qdq")["weights"]["reduce_range"] is (setting == "yes")


def test_auto_follows_the_cpu():
    assert reduces_range(Scheme(reduce_range="auto")) is host_int8_saturates()
    assert QType.INT7.qmin == -64 and QType.INT7.qmax == 63 and QType.INT7.numpy_dtype == np.int8


def test_fused_kernels_agree_with_the_qdq_arithmetic():
    """The onnx-int8 artifact means the same in onnxruntime's fused kernels as written (no saturation)."""
    model = import_model("fashion-cnn")
    q = quantize(model, get_target("onnx-int8"), zoo.calibration_data("fashion-cnn"))
    x = np.asarray(zoo.eval_data("fashion-cnn").inputs["input"])
    fused = make_session(q.to_bytes()).run(None, {"input": x})[0]
    written = make_session(q.to_bytes(), optimize=False).run(None, {"input": x})[0]
    assert np.mean(fused.argmax(1) == written.argmax(1)) >= 0.998
    assert np.abs(fused - written).max() < 0.05 * np.abs(written).max()
