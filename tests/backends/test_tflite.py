"""TFLite backend: tiny models through onnx2tf and the TFLite converter, run with LiteRT.

Numbers are compared with onnxruntime on the float ONNX model, on held-out samples drawn like
the calibration samples.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import socket
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

if importlib.util.find_spec("onnx2tf") is None:  # find_spec: importing it would load TensorFlow now
    pytest.skip("the tflite extra (onnx2tf, tensorflow) is not installed", allow_module_level=True)
torch = pytest.importorskip("torch")

from irq.backends.tflite import TFLiteBackend  # noqa: E402
from irq.backends.tflite.flatmodel import FlatModel  # noqa: E402
from irq.backends.tflite.runner import sidecar_path  # noqa: E402
from irq.data import DataSet  # noqa: E402
from irq.errors import LoweringError  # noqa: E402
from irq.ir.model import QModel  # noqa: E402
from irq.pipeline.targets import TARGETS  # noqa: E402
from irq.quant.spec import LayerDecision, Precision, TensorRange  # noqa: E402

nn = torch.nn


class SmallNet(nn.Module):
    """Conv-BN-ReLU, padded MaxPool after ReLU, a residual block, global pooling, a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.conv1 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))
        x = torch.relu(x + self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


class HazardNet(nn.Module):
    """A padded MaxPool on a tensor with negative values (no ReLU before it); 4-D output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.conv(x)))


def _export(module: nn.Module, shape: tuple[int, ...], dynamic: bool) -> onnx.ModelProto:
    module.eval()
    for m in module.modules():  # non-trivial BN statistics, so folding BN matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    buf = io.BytesIO()
    axes = {"input": {0: "N"}, "output": {0: "N"}} if dynamic else None
    torch.onnx.export(module, (torch.randn(*shape),), buf, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"], dynamic_axes=axes)
    return onnx.load_from_string(buf.getvalue())


def _run_ort(proto: onnx.ModelProto, x: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    fixed = proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value
    step = fixed or len(x)
    parts = [session.run(outputs, {"input": x[i:i + step]}) for i in range(0, len(x), step)]
    return [np.concatenate(p) for p in zip(*parts, strict=True)]


def _minmax_ranges(proto: onnx.ModelProto, x: np.ndarray) -> dict[str, TensorRange]:
    probe = onnx.ModelProto.FromString(proto.SerializeToString())
    names = ["input", *(o for n in probe.graph.node for o in n.output if n.op_type != "Constant")]
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names[1:])
    outs = [x, *_run_ort(probe, x, names[1:])]
    return {n: TensorRange(float(o.min()), float(o.max())) for n, o in zip(names, outs, strict=True)}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@dataclasses.dataclass
class Case:
    proto: onnx.ModelProto
    calib: np.ndarray
    test: np.ndarray
    ranges: dict[str, TensorRange]

    def qmodel(self, **changes: object) -> QModel:
        fields = {"model": ir.from_proto(self.proto), "calibration": DataSet({"input": self.calib}),
                  "ranges": dict(self.ranges), "name": "tiny"}
        return QModel(**{**fields, **changes})  # type: ignore[arg-type]

    def reference(self) -> np.ndarray:
        return _run_ort(self.proto, self.test)[0]


def _case(module_type: type[nn.Module], dynamic: bool) -> Case:
    torch.manual_seed(0)
    proto = _export(module_type(), (1, 3, 32, 32), dynamic)
    calib = np.random.default_rng(0).normal(size=(32, 3, 32, 32)).astype(np.float32)
    test = np.random.default_rng(1).normal(size=(8, 3, 32, 32)).astype(np.float32)
    return Case(proto, calib, test, _minmax_ranges(proto, calib))


@pytest.fixture(scope="module")
def small() -> Case:
    return _case(SmallNet, dynamic=True)


@pytest.fixture(scope="module")
def hazard() -> Case:
    return _case(HazardNet, dynamic=False)


def _target(name: str, **options: str) -> object:
    base = TARGETS[name]
    return dataclasses.replace(base, options={**base.options, **options})


@pytest.mark.parametrize(("target", "min_cosine"), [
    ("tflite-fp32", 0.99999), ("tflite-fp16", 0.9995), ("tflite-dynamic", 0.995), ("tflite-int8", 0.99)])
def test_modes_match_onnxruntime(small: Case, tmp_path: Path, target: str, min_cosine: float) -> None:
    backend = TFLiteBackend()
    art = backend.lower(small.qmodel(), TARGETS[target], tmp_path)
    assert art.path == tmp_path / "model.tflite" and art.runtime == "litert" and art.target == target
    assert set(art.info) >= {"mode", "io", "seconds", "ops"}
    # The MaxPool follows a ReLU: every mode pads it with an exact 0 (PAD, which XNNPACK takes)
    # instead of onnx2tf's float minimum (PADV2, which it does not).
    assert "PADV2" not in art.info["ops"] and art.info["maxpool_padding"][0]["bound"] == "relu"
    runner = backend.runner(art.path)
    assert runner.max_batch is None  # dynamic batch: all 8 samples in one call
    assert runner.delegated_partitions >= 1
    (y,) = runner.run({"input": small.test})
    ref = small.reference()
    assert y.shape == ref.shape
    assert _cosine(y, ref) > min_cosine
    if target == "tflite-int8":
        flat = FlatModel(art.path.read_bytes())
        assert flat.type_name(flat.signature()[0]["input_0"]) == "INT8"
        assert art.info["float_ops"] == []
        assert art.info["range_fidelity"]["within_1pct"] == art.info["range_fidelity"]["compared"] > 5


def test_int8_with_float_io(small: Case, tmp_path: Path) -> None:
    backend = TFLiteBackend()
    art = backend.lower(small.qmodel(), _target("tflite-int8", io="float"), tmp_path)
    flat = FlatModel(art.path.read_bytes())
    assert flat.type_name(flat.signature()[0]["input_0"]) == "FLOAT32"
    assert {"QUANTIZE", "DEQUANTIZE"} <= set(art.info["ops"])
    assert art.info["float_ops"] == []
    (y,) = backend.runner(art.path).run({"input": small.test})
    assert _cosine(y, small.reference()) > 0.99


def test_ir_ranges_replace_the_converters(small: Case, tmp_path: Path) -> None:
    # Clip every activation range to 70 % of its width, as an aggressive percentile would.
    clipped = {k: TensorRange(r.lo * 0.7, r.hi * 0.7, "percentile") for k, r in small.ranges.items()}
    backend = TFLiteBackend()
    fid = backend.lower(small.qmodel(ranges=clipped), TARGETS["tflite-int8"], tmp_path).info["range_fidelity"]
    assert fid["source"] == "ir" and fid["injected"] >= 6
    assert fid["within_1pct"] == fid["compared"] >= 6
    assert fid["calibrated_scale_ratio"]["min"] > 1.3  # the converter's own min/max were wider
    own = backend.lower(small.qmodel(ranges=clipped), _target("tflite-int8", ranges="tflite"), tmp_path / "own")
    assert own.info["range_fidelity"]["injected"] == 0
    assert own.info["range_fidelity"]["scale_ratio"]["min"] > 1.3


def test_maxpool_padding_on_negative_values(hazard: Case, tmp_path: Path) -> None:
    assert hazard.ranges["/conv/Conv_output_0"].lo < -0.5
    backend = TFLiteBackend()
    art = backend.lower(hazard.qmodel(), TARGETS["tflite-int8"], tmp_path)
    (fix,) = art.info["maxpool_padding"]
    assert fix["bound"] == "range" and fix["pad_value"] == hazard.ranges["/conv/Conv_output_0"].lo
    flat = FlatModel(art.path.read_bytes())
    scales = [s for i in flat.activations() for s in flat.quant_params(i)[0]]
    assert scales and max(scales) < 0.1  # onnx2tf's own padding gives ~1e36
    runner = backend.runner(art.path)  # allocating applies XNNPACK: a refusal raises here
    assert runner.delegated_partitions >= 1
    assert runner.max_batch == 1  # fixed batch: the runner loops over the 8 samples
    (y,) = runner.run({"input": hazard.test})
    ref = hazard.reference()
    assert y.shape == ref.shape == (8, 4, 16, 16)  # NHWC output back in NCHW
    assert _cosine(y, ref) > 0.99


def test_maxpool_without_range_is_bounded_from_calibration(hazard: Case, tmp_path: Path) -> None:
    art = TFLiteBackend().lower(hazard.qmodel(ranges={}), TARGETS["tflite-int8"], tmp_path)
    (fix,) = art.info["maxpool_padding"]
    assert fix["bound"] == "observed"
    assert fix["pad_value"] == pytest.approx(hazard.ranges["/conv/Conv_output_0"].lo, rel=1e-6)
    assert art.info["range_fidelity"]["injected"] == 0


def test_no_network_access_and_no_output(hazard: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capfd: pytest.CaptureFixture[str]) -> None:
    attempts: list[str] = []

    def refuse(what: str):
        def blocked(*args: object, **kwargs: object) -> None:
            attempts.append(f"{what}{args[:2]}")
            raise OSError("network blocked by test")
        return blocked

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    backend = TFLiteBackend()
    art = backend.lower(hazard.qmodel(calibration=None), TARGETS["tflite-fp32"], tmp_path)
    backend.runner(art.path).run({"input": hazard.test[:1]})
    assert art.path.exists()
    assert attempts == []
    assert capfd.readouterr() == ("", "")  # onnx2tf, TensorFlow and XNNPACK chatter is captured
    # The guard is what kept it offline: onnx2tf on its own tries to download its sample data.
    import onnx2tf

    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception):  # noqa: B017 - requests' error type is onnx2tf's business
        onnx2tf.convert(onnx_graph=hazard.proto, disable_model_save=True, non_verbose=True,
                        not_use_onnxsim=True)
    assert attempts


def test_plan_keeps_a_conv_float(small: Case, tmp_path: Path) -> None:
    plan = {"/conv1/Conv": LayerDecision(Precision.FP32, reason="test")}
    backend = TFLiteBackend()
    art = backend.lower(small.qmodel(plan=plan), TARGETS["tflite-int8"], tmp_path)
    assert art.info["float_nodes_kept"] == ["/conv1/Conv"]
    assert [op.split(" ")[0] for op in art.info["float_ops"]] == ["CONV_2D"], art.info["float_ops"]
    flat = FlatModel(art.path.read_bytes())
    float_convs = [op for op in flat.ops() if op.op_type == "CONV_2D"
                   and flat.type_name(op.inputs[1]) == "FLOAT32" and flat.type_name(op.outputs[0]) == "FLOAT32"]
    assert len(float_convs) == 1
    assert sum(op.op_type == "CONV_2D" for op in flat.ops()) == 3
    (y,) = backend.runner(art.path).run({"input": small.test})
    assert _cosine(y, small.reference()) > 0.99


class TwoInTwoOut(nn.Module):
    """Inputs of rank 4 and 2; the 2-D output comes first, the NCHW feature map second."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(5, 4)

    def forward(self, image: torch.Tensor, vector: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.conv(image)
        return self.fc(vector) + fmap.mean((2, 3)), fmap


@pytest.mark.parametrize("target", ["tflite-fp32", "tflite-int8"])
def test_inputs_and_outputs_keep_onnx_names_order_and_layout(tmp_path: Path, target: str) -> None:
    torch.manual_seed(0)
    buf = io.BytesIO()
    axes = {n: {0: "N"} for n in ("image", "vector", "scores", "fmap")}
    torch.onnx.export(TwoInTwoOut().eval(), (torch.randn(1, 3, 8, 6), torch.randn(1, 5)), buf, dynamo=False,
                      opset_version=17, input_names=["image", "vector"], output_names=["scores", "fmap"],
                      dynamic_axes=axes)
    proto = onnx.load_from_string(buf.getvalue())
    rng = np.random.default_rng(0)
    feeds = {"image": rng.normal(size=(16, 3, 8, 6)).astype(np.float32),
             "vector": rng.normal(size=(16, 5)).astype(np.float32)}
    qm = QModel(model=ir.from_proto(proto), calibration=DataSet(feeds), name="two")
    backend = TFLiteBackend()
    art = backend.lower(qm, TARGETS[target], tmp_path)
    assert art.info["inputs"] == ["image", "vector"] and art.info["outputs"] == ["scores", "fmap"]
    outs = backend.runner(art.path).run(feeds)
    refs = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for y, ref in zip(outs, refs, strict=True):
        assert y.shape == ref.shape
        assert _cosine(y, ref) > (0.99999 if target == "tflite-fp32" else 0.99)


def _wave_model(op: str = "Sin") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.normal(size=(4, 3, 3, 3)) * 0.3).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.normal(size=(4, 4, 1, 1)) * 0.3).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["input", "w1"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
             helper.make_node(op, ["a"], ["b"], name="wave"),
             helper.make_node("Conv", ["b", "w2"], ["output"], name="conv_b")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 16, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_op_left_float_is_an_error_only_when_planned_int8(tmp_path: Path) -> None:
    proto = _wave_model("Sin")
    x = np.random.default_rng(0).normal(size=(8, 3, 16, 16)).astype(np.float32)
    qm = QModel(model=ir.from_proto(proto), calibration=DataSet({"input": x}), name="sin")
    qm.plan = {"wave": LayerDecision(Precision.INT8)}
    with pytest.raises(LoweringError, match=r"SIN \(ONNX wave"):
        TFLiteBackend().lower(qm, TARGETS["tflite-int8"], tmp_path)
    assert not (tmp_path / "model.tflite").exists()
    # Asked for in the plan, the same float op is accepted.
    qm.plan = {"wave": LayerDecision(Precision.FP32)}
    art = TFLiteBackend().lower(qm, TARGETS["tflite-int8"], tmp_path / "fp32")
    assert art.info["float_nodes_kept"] == ["wave"]
    # Left out of the plan (no int8 kernel anywhere), it runs in float and the artifact says so.
    qm.plan = {}
    art = TFLiteBackend().lower(qm, TARGETS["tflite-int8"], tmp_path / "unplanned")
    assert any(op.startswith("SIN") for op in art.info["float_ops_unplanned"])


def test_op_without_builtin_kernel_is_named(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(4, 3, 16, 16)).astype(np.float32)
    qm = QModel(model=ir.from_proto(_wave_model("Erf")), calibration=DataSet({"input": x}), name="erf")
    with pytest.raises(LoweringError, match="no builtin kernel for Erf"):
        TFLiteBackend().lower(qm, TARGETS["tflite-fp32"], tmp_path)


def test_runner_without_sidecar_uses_reference(hazard: Case, tmp_path: Path) -> None:
    backend = TFLiteBackend()
    art = backend.lower(hazard.qmodel(calibration=None), TARGETS["tflite-fp32"], tmp_path)
    sidecar_path(art.path).unlink()
    (y,) = backend.runner(art.path, reference=hazard.qmodel()).run({"input": hazard.test[:2]})
    np.testing.assert_allclose(y, hazard.reference()[:2], atol=1e-4)


def test_bad_options_and_missing_data(small: Case, tmp_path: Path) -> None:
    with pytest.raises(LoweringError, match="mode"):
        TFLiteBackend().lower(small.qmodel(), _target("tflite-int8", mode="int4"), tmp_path)
    with pytest.raises(LoweringError, match="io"):
        TFLiteBackend().lower(small.qmodel(), _target("tflite-int8", io="uint8"), tmp_path)
    with pytest.raises(LoweringError, match="calibration"):
        TFLiteBackend().lower(small.qmodel(calibration=None), TARGETS["tflite-int8"], tmp_path)
