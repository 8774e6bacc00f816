"""Quantization-aware training: the fake quantizers against the lowered QDQ artifact.

Fake quantization must compute what onnxruntime computes on the exported QDQ graph (up to a
rare one-step rounding flip from float summation order), a short run must lower the loss, and
learned ranges and weights must come out of insert-qdq unchanged. Runtime: about 26 s on 2 cores
(60-80 s when the machine is busy).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from irq import zoo  # noqa: E402
from irq.data.conform import conform  # noqa: E402
from irq.frontends import import_model  # noqa: E402
from irq.ir.model import constant_array  # noqa: E402
from irq.ir.ort import make_session, with_outputs  # noqa: E402
from irq.pipeline.recipe import recipe_from_dict  # noqa: E402
from irq.qat import QATOptions, qat  # noqa: E402
from irq.qat.fake_quant import ActRange, fake_quant, fake_quant_bias, fake_quant_weight  # noqa: E402
from irq.qat.prepare import export, prepare, resolve_target  # noqa: E402
from irq.qat.train import predict  # noqa: E402
from irq.qat.translate import QDQModule  # noqa: E402
from irq.quant.arith import activation_spec, dequantize, quantize, quantize_bias, quantize_weight  # noqa: E402
from irq.quant.spec import QType, TensorRange  # noqa: E402

nn = torch.nn
PER_TENSOR = recipe_from_dict({"layers": [{"op_type": "Conv|Gemm", "granularity": "per-tensor"}]})


@pytest.fixture(scope="module")
def fashion():
    q = import_model("fashion-cnn")
    calib = conform(zoo.calibration_data("fashion-cnn"), q.graph)
    test = conform(zoo.eval_data("fashion-cnn"), q.graph)
    return q, calib, test


# -- the arithmetic ------------------------------------------------------------------------------
@pytest.mark.parametrize("qtype", [QType.UINT8, QType.INT8, QType.INT16])
@pytest.mark.parametrize("symmetric", [False, True])
def test_activation_fake_quant_is_quantize_linear(qtype, symmetric):
    rng = np.random.default_rng(1)
    for lo, hi in [(-1.3, 2.7), (0.0, 5.1), (0.2, 0.9), (-3.0, -0.5), (0.0, 0.0), (-1e-3, 7e-4)]:
        r = TensorRange(lo, hi)
        spec = activation_spec(r, qtype, symmetric)
        with torch.no_grad():
            scale, zp = ActRange(r, learn=True).spec(qtype, symmetric)
        assert float(scale) == spec.scale[0] and int(zp) == spec.zero_point[0]
        x = rng.normal(0, 2, size=4096).astype(np.float32)
        x[:4] = np.array([0.5, 1.5, 2.5, -0.5], np.float32) * spec.scale[0]  # ties: half to even
        ref = dequantize(quantize(x, np.float32(spec.scale[0]), np.int64(spec.zero_point[0]), qtype),
                         np.float32(spec.scale[0]), np.int64(spec.zero_point[0]))
        got = fake_quant(torch.from_numpy(x), scale, zp, qtype).numpy()
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("qtype", [QType.INT8, QType.INT4])
@pytest.mark.parametrize("axis", [None, 0, 1])
def test_weight_and_bias_fake_quant_match_quant_math(qtype, axis):
    w = np.random.default_rng(2).normal(0, 0.1, size=(16, 8, 3, 3)).astype(np.float32)
    w[3] = 0.0  # an all-zero channel gets scale 1, as weight_scales gives it
    q, scales = quantize_weight(w, axis, qtype)
    ref = dequantize(q, scales, np.zeros_like(scales, np.int64), axis)
    got, scale_t = fake_quant_weight(torch.from_numpy(w), axis, qtype)
    np.testing.assert_array_equal(got.numpy(), ref)
    np.testing.assert_array_equal(scale_t.numpy().reshape(-1), scales)
    if axis == 0:
        b = np.random.default_rng(3).normal(0, 0.5, size=16).astype(np.float32)
        bq, bs = quantize_bias(b, 0.0173, scales)
        got_b = fake_quant_bias(torch.from_numpy(b), torch.tensor(0.0173, dtype=torch.float32), scale_t)
        np.testing.assert_array_equal(got_b.numpy(), (bq.astype(np.float64) * bs).astype(np.float32))


def test_fake_quant_gradients_are_straight_through():
    x = torch.tensor([-5.0, -0.26, 0.0, 0.74, 1.2, 9.0], requires_grad=True)
    r = ActRange(TensorRange(-1.0, 2.0), learn=True)
    scale, zp = r.spec(QType.UINT8, False)
    fake_quant(x, scale, zp, QType.UINT8).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 1, 1, 1, 1, 0])  # clamped codes stop the gradient
    assert r.hi.grad is not None and r.lo.grad is not None and float(r.hi.grad) != 0.0


# -- the fashion-cnn QDQ graph -------------------------------------------------------------------
def _act_outputs(module: QDQModule) -> list[str]:
    return [s.outputs[0] for s in module.steps if s.kind == "act"]


@pytest.mark.parametrize("weights,recipe", [(None, None), ("int4", PER_TENSOR)], ids=["int8", "int4-per-tensor"])
@pytest.mark.parametrize("target", ["onnx-int8", "onnx-int8-arm"])
def test_fake_quant_forward_equals_qdq_artifact(fashion, target, weights, recipe):
    q, calib, test = fashion
    prepared = prepare(q, resolve_target(target, weights), calib, recipe)
    module = QDQModule(prepared.structure, prepared.calibrated)
    x = np.asarray(test.inputs["input"])
    names = _act_outputs(module)
    assert len(names) == 9  # input, 3 conv outputs, 3 pool outputs, flatten, hidden linear
    session = make_session(with_outputs(prepared.structure.to_proto(), names))  # ORT's fused int8 kernels
    ort_out = session.run(["logits", *names], {"input": x})
    with torch.no_grad():
        values = module.values({"input": torch.from_numpy(x.copy())})
    logits = values["logits"]
    for name, ref in zip(names, ort_out[1:], strict=True):
        key = module.range_keys[next(s.inputs[0] for s in module.steps if s.outputs[0] == name)]
        step = float(module.ranges[key].spec(QType(prepared.structure.scheme.activation), False)[0])
        codes = np.abs(values[name].numpy() - ref) / step
        assert codes.max() <= 1.0 + 1e-4, name  # at most one step apart...
        assert (codes > 0.5).mean() < 1e-3, name  # ...and that rarely (float summation order)
    out_step = activation_spec(prepared.calibrated.ranges["logits"], prepared.structure.scheme.activation).scale[0]
    diff = np.abs(logits.numpy() - ort_out[0])
    assert diff.max() <= out_step
    assert np.mean(logits.numpy().argmax(1) == ort_out[0].argmax(1)) >= 0.998


def test_untrained_export_is_the_ptq_model(fashion):
    q, calib, test = fashion
    prepared = prepare(q, resolve_target("onnx-int8", "int4"), calib, PER_TENSOR)
    exported = export(prepared, QDQModule(prepared.structure, prepared.calibrated))
    feeds = {"input": np.asarray(test.inputs["input"][:200])}
    np.testing.assert_array_equal(make_session(exported.to_bytes()).run(None, feeds)[0],
                                  make_session(prepared.ptq().to_bytes()).run(None, feeds)[0])
    weights = [v for v in exported.graph.initializers.values() if v.name.endswith("_quantized")
               and v.const_value.numpy().dtype == np.int8]
    wide = [w.const_value.numpy() for w in weights if np.prod(w.shape[1:]) >= 32]  # smaller filters keep int8
    assert len(wide) == len(weights) - 1 and all(np.abs(w).max() <= 8 for w in wide)  # int4 values


def test_short_qat_lowers_the_loss(fashion):
    q, calib, _ = fashion
    probe = calib.head(256)
    result = qat(q, calib, target="onnx-int8", calib=calib, weights="int4", recipe=PER_TENSOR,
                 options=QATOptions(lr=3e-4, batch_size=64, max_steps=24, epochs=4, seed=1))
    before = QDQModule(result.prepared.structure, result.prepared.calibrated)
    loss = torch.nn.functional.cross_entropy

    def mean_loss(module):
        return float(loss(torch.from_numpy(predict(module, probe)), torch.from_numpy(np.asarray(probe.labels))))

    assert result.log.steps == 24 and len(result.log.losses) == 24
    assert mean_loss(result.module) < 0.9 * mean_loss(before)


def test_learned_ranges_and_weights_survive_lowering(fashion):
    q, calib, _ = fashion
    result = qat(q, calib, target="onnx-int8-arm", calib=calib,
                 options=QATOptions(lr=1e-4, range_lr=2e-2, learn_ranges=True, batch_size=64, max_steps=10))
    module, exported = result.module, result.qmodel
    calibrated = result.prepared.structure.ranges
    moved = [n for n, k in module.range_keys.items()
             if abs(module.ranges[k].to_range().hi - calibrated[n].hi) > 1e-3 * abs(calibrated[n].hi)]
    assert len(moved) >= 4  # otherwise this test would pass without learning anything
    checked = 0
    for node in exported.graph:
        if node.op_type != "QuantizeLinear":
            continue
        key = module.range_keys[node.inputs[0].name]
        spec = activation_spec(module.ranges[key].to_range(), QType.INT8)
        assert float(constant_array(node.inputs[1])) == spec.scale[0], node.inputs[0].name
        assert int(constant_array(node.inputs[2])) == spec.zero_point[0], node.inputs[0].name
        checked += 1
    assert checked == len(module.range_keys)
    float_nodes = {n.name: n for n in result.prepared.calibrated.graph}
    convs = [n for n in exported.graph if n.op_type in ("Conv", "Gemm")]
    assert len(convs) == 5
    for node in convs:
        w = module.weight(float_nodes[node.name].inputs[1].name).detach().numpy()
        w_dq = node.inputs[1].producer()
        q_ref, s_ref = quantize_weight(w, 0)  # trained weights, per output channel (Gemm has transB=1)
        np.testing.assert_array_equal(w_dq.inputs[0].const_value.numpy(), q_ref)
        np.testing.assert_array_equal(w_dq.inputs[1].const_value.numpy(), s_ref)
