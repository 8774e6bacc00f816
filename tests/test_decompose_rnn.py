"""decompose-rnn: unrolled LSTM/GRU equal onnxruntime's recurrent kernels; what it cannot do it names."""

from __future__ import annotations

import numpy as np
import pytest

from irq.frontends.onnx_file import from_proto
from irq.frontends.torch_module import export_torch
from irq.ir.ort import make_session
from irq.pipeline.infra import PassManager
from irq.pipeline.registry import parse_pipeline


def _rnn_model(kind: str, bidirectional: bool, steps: int = 5):
    import torch

    torch.manual_seed(0)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = cls(8, 16, num_layers=2, bidirectional=bidirectional)

        def forward(self, x, h):
            y, state = self.rnn(x, h)
            return y, state[0] if kind == "lstm" else state

    layers = 4 if bidirectional else 2
    h0 = torch.randn(layers, 3, 16)
    x = torch.randn(steps, 3, 8)
    args = (x, (h0, torch.randn(layers, 3, 16)) if kind == "lstm" else h0)
    proto = export_torch(Net(), args if kind == "gru" else (x, args[1]), input_names=["x", "h"],
                         output_names=["y", "hn"], dynamic_batch=False)
    feeds = {i.name: a.numpy() for i, a in zip(proto.graph.input, (x, *((args[1]) if kind == "lstm" else (h0,))),
                                               strict=False)}
    return from_proto(proto, kind), feeds


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_unrolled_equals_the_recurrent_op(kind, bidirectional):
    qm, feeds = _rnn_model(kind, bidirectional)
    out = PassManager(parse_pipeline("shape-inference,decompose-rnn,cleanup"))(qm.clone()).model
    ops = {n.op_type for n in out.graph}
    assert not ops & {"LSTM", "GRU"} and "MatMul" in ops
    assert len(out.analysis.of("decompose-rnn")["decomposed"]) == 2
    ref = make_session(qm.to_bytes()).run(None, feeds)
    got = make_session(out.to_bytes()).run(None, feeds)
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_allclose(g, r, atol=1e-5)


def test_a_dynamic_sequence_is_left_and_named():
    qm, _ = _rnn_model("lstm", False)
    qm.graph.inputs[0].shape = None
    out = PassManager(parse_pipeline("decompose-rnn"))(qm.clone()).model
    kept = out.analysis.of("decompose-rnn")["kept"]
    assert kept and all("not static" in why for why in kept.values())


def test_fp16_keeps_an_lstm_whose_optional_outputs_are_omitted():
    """silero-vad's LSTM omits Y_h; the fp16 converter's topological sort used to fail on the empty name."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (1, 64, 8)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.normal(0, 0.3, (1, 64, 16)).astype(np.float32), "R")]
    lstm = helper.make_node("LSTM", ["x", "W", "R", "", "", "h0", "c0"], ["y", "", "cn"], hidden_size=16, name="lstm")
    graph = helper.make_graph([lstm], "omitted", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 1, 8]),
                                                  helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, 1, 16]),
                                                  helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, 1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 1, 1, 16]),
                               helper.make_tensor_value_info("cn", TensorProto.FLOAT, [1, 1, 16])], inits)
    model = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), "lstm")
    half = PassManager(parse_pipeline("to-fp16"))(model.clone()).model
    feeds = {"x": rng.normal(size=(4, 1, 8)).astype(np.float32), "h0": np.zeros((1, 1, 16), np.float32),
             "c0": np.zeros((1, 1, 16), np.float32)}
    for a, b in zip(make_session(half.to_bytes()).run(None, feeds), make_session(model.to_bytes()).run(None, feeds),
                    strict=True):
        np.testing.assert_allclose(a, b, atol=2e-2)
