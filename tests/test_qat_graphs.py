"""QAT on graphs beyond fashion-cnn: a torch module with branches, mixed precision, errors, CLI.

Runtime: about 11 s on 2 cores (30 s when the machine is busy).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch")

from irq.cli import main  # noqa: E402
from irq.data import DataSet, save_npz  # noqa: E402
from irq.errors import InputError, ModelImportError  # noqa: E402
from irq.ir.ort import make_session  # noqa: E402
from irq.pipeline.recipe import recipe_from_dict  # noqa: E402
from irq.qat import QATOptions, qat  # noqa: E402
from irq.qat.translate import QDQModule  # noqa: E402
from irq.quant.arith import activation_spec  # noqa: E402
from irq.quant.weight_range import host_int8_saturates  # noqa: E402

nn = torch.nn


class Branchy(nn.Module):
    """BN, ReLU6 (Clip), a residual Add, a sigmoid gate (Mul), Concat, AveragePool, global pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.gate = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = nn.functional.relu6(self.a(x)) + x
        z = torch.cat([y, torch.sigmoid(self.gate(x)) * x], 1)
        z = nn.functional.adaptive_avg_pool2d(nn.functional.avg_pool2d(z, 2), 1)
        return self.head(torch.flatten(z, 1))


@pytest.fixture(scope="module")
def data() -> DataSet:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(192, 3, 12, 12)).astype(np.float32)
    y = (x[:, 0].mean(axis=(1, 2)) > 0).astype(np.int64) + 2 * (x[:, 1].mean(axis=(1, 2)) > 0)
    return DataSet({"input": x}, y, "synthetic")


@pytest.fixture(scope="module")
def module() -> nn.Module:
    torch.manual_seed(0)
    m = Branchy()
    with torch.no_grad():
        m.stem[1].running_mean.uniform_(-0.3, 0.3)
        m.stem[1].running_var.uniform_(0.5, 2.0)
    return m.eval()


def test_float_translation_equals_onnxruntime(module, data):
    result = qat(module, data, options=QATOptions(max_steps=1))
    calibrated = result.prepared.calibrated
    ops = {n.op_type for n in calibrated.graph}
    assert {"Clip", "Add", "Mul", "Sigmoid", "Concat", "AveragePool", "GlobalAveragePool"} <= ops
    assert "BatchNormalization" not in ops  # folded by the export, as the IR sees it
    float_module = QDQModule(calibrated, calibrated)
    x = np.asarray(data.inputs["input"][:64])
    ref = make_session(calibrated.to_bytes()).run(None, {"input": x})[0]
    with torch.no_grad():
        got = float_module(torch.from_numpy(x.copy())).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", ["onnx-int8", "onnx-int8-arm"])
def test_torch_module_fake_quant_equals_qdq(module, data, target):
    result = qat(module, data, target=target, options=QATOptions(max_steps=1))
    prepared = result.prepared
    fq = QDQModule(prepared.structure, prepared.calibrated)
    assert {s.kind for s in fq.steps} == {"op", "act", "weight", "bias"}
    caps = sorted(r.cap for r in fq.ranges.values() if r.relu_folded and r.cap is not None)
    assert caps == [6.0]  # the ReLU6 before the residual Add is folded into its quantizer, capped
    x = np.asarray(data.inputs["input"])
    # Arm kernels do not saturate; on an x86 CPU whose kernels do, compare with Q/DQ as written.
    kernels = target != "onnx-int8-arm" or not host_int8_saturates()
    ref = make_session(prepared.structure.to_bytes(), optimize=kernels).run(None, {"input": x})[0]
    with torch.no_grad():
        got = fq(torch.from_numpy(x.copy())).numpy()
    out_name = prepared.structure.graph.outputs[0].name
    step = activation_spec(prepared.calibrated.ranges[out_name], prepared.structure.scheme.activation).scale[0]
    assert np.abs(got - ref).max() <= step
    assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.99


def test_layers_kept_float_train_in_float(module, data):
    first = "/stem/stem.0/Conv"
    recipe = recipe_from_dict({"layers": [{"name": f"^{first}$", "precision": "fp32"}]})
    result = qat(module, data, recipe=recipe, options=QATOptions(lr=1e-2, max_steps=3))
    assert result.qmodel.plan[first].precision.value == "fp32"
    conv = next(n for n in result.qmodel.graph if n.name == first)
    assert conv.inputs[1].const_value is not None  # no DequantizeLinear: the weight stayed float
    trained = result.module.weight(conv.inputs[1].name).detach().numpy()
    np.testing.assert_array_equal(conv.inputs[1].const_value.numpy(), trained)
    start = result.prepared.calibrated.graph.initializers[conv.inputs[1].name].const_value.numpy()
    assert not np.array_equal(trained, start)
    step = next(s for s in result.module.steps if s.label == first)
    assert step.kind == "op" and step.inputs[1] == "param:" + conv.inputs[1].name
    others = [n for n in result.qmodel.graph if n.op_type == "Conv" and n.name != first]
    assert all(n.inputs[1].producer().op_type == "DequantizeLinear" for n in others)


def test_pinned_plan_is_honoured(module, data):
    from irq.frontends.torch_module import from_torch
    from irq.quant.spec import LayerDecision, Precision

    qmodel = from_torch(module, torch.randn(1, 3, 12, 12))
    pinned = "/gate/Conv"
    qmodel.plan[pinned] = LayerDecision(Precision.FP32, "sensitivity search")
    result = qat(qmodel, data, options=QATOptions(max_steps=2))
    assert result.qmodel.plan[pinned].precision == Precision.FP32
    gate = next(n for n in result.qmodel.graph if n.name == pinned)
    assert gate.inputs[1].const_value is not None and gate.inputs[0].producer().op_type != "DequantizeLinear"


def test_dataloader_and_any_loss_callable(module, data):
    x, y = torch.from_numpy(np.asarray(data.inputs["input"])), torch.from_numpy(np.asarray(data.labels))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
    calls = []

    def smoothed_ce(logits, labels):
        calls.append(len(labels))
        return nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)

    result = qat(module, loader, loss=smoothed_ce, options=QATOptions(epochs=2, lr=1e-3))
    assert result.log.steps == 12 and calls == [32] * 12 and len(result.log.epoch_loss) == 2
    assert len(result.prepared.calibrated.calibration) == 192  # calibrated on the first batches (<= 500)


def test_unsupported_op_is_named(tmp_path, data):
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Cos", ["c"], ["cos"], name="the_cosine"),
         helper.make_node("GlobalAveragePool", ["cos"], ["p"], name="pool"),
         helper.make_node("Flatten", ["p"], ["logits"], name="flat")],
        "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 12, 12])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], [w])
    path = tmp_path / "cos.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelImportError, match=r"the_cosine.*Cos"):
        qat(path, data, options=QATOptions(max_steps=1))


def test_targets_qat_cannot_reproduce_are_refused(module, data):
    with pytest.raises(InputError, match="quantize-dynamic"):
        qat(module, data, target="onnx-dynamic")
    with pytest.raises(InputError, match="int4"):
        qat(module, data, target="tflite-int8", weights="int4")


def test_cli_writes_artifacts_and_qat_report(tmp_path, data):
    fashion = DataSet({"x": np.asarray(_fashion().inputs["input"][:256])}, _fashion().labels[:256])
    save_npz(tmp_path / "train.npz", fashion)
    save_npz(tmp_path / "eval.npz", fashion.head(128))
    out = tmp_path / "out"
    argv = ["qat", "fashion-cnn", "--train", str(tmp_path / "train.npz"), "--eval", str(tmp_path / "eval.npz"),
            "--max-steps", "4", "--batch-size", "64", "--weights", "int4", "-o", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    q = report["qat"]
    assert q["steps"] == 4 and q["weights"] == "int4" and len(q["loss"]["curve"]) == 4
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "model.onnx").exists() and (out / "ptq" / "model.onnx").exists()
    assert set(q["accuracy"]) >= {"float", "ptq", "qat", "ptq_drop_pt", "qat_drop_pt", "simulated"}
    assert q["accuracy"]["qat"] == report["accuracy"]["artifact"]["top1"]
    assert main([*argv[:-2], "--max-drop", "-100", "--no-baseline", "-o", str(tmp_path / "strict")]) == 3
    assert (tmp_path / "strict" / "report.json").exists()


def _fashion() -> DataSet:
    from irq import zoo

    return zoo.calibration_data("fashion-cnn")
