"""The int8 tools bench/anchors.py compares, each run in its own process (``--worker``).

Every tool gets the same float ONNX file and the same calibration .npz and writes one artifact.
The worker prints a JSON line: artifact path, seconds spent in the tool (imports excluded) and
the process's peak RSS.

- irq-onnx / irq-tflite: ``irq.compile`` for onnx-int8 / tflite-int8 (irq-onnx-accurate, -max: its
  presets; irq-onnx-adaround: the default pipeline with adaround; irq-tflite-fp32 is the
  float LiteRT baseline for latency, not a contender);
- ort-default: onnxruntime ``quantize_static`` with its defaults (QDQ, int8 activations and weights
  (S8S8), per-tensor, MinMax);
- ort-pc: ``quant_pre_process`` then per-channel QDQ with uint8 activations (U8S8, the fast pair on
  x86), MinMax: onnxruntime's recommended path;
- ort-pc-pct: the same with Percentile calibration;
- onnx2tf-oiqt: onnx2tf's own full conversion with ``output_integer_quantized_tflite`` fed the
  calibration samples through ``custom_input_op_name_np_data_path`` (its ``*_full_integer_quant``);
- tflite-plain: the onnx2tf Keras model through a plain TFLiteConverter full-int8 conversion with
  the same samples as representative dataset (the converter's own ranges, not irq's).
"""

from __future__ import annotations

import json
import resource
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from common import timed

from irq.data import DataSet, load_data

TOOLS = ("irq-onnx", "irq-tflite", "ort-default", "ort-pc", "ort-pc-pct", "onnx2tf-oiqt", "tflite-plain")
BASELINES = ("irq-tflite-fp32",)


def peak_rss_mb() -> float:
    """Peak RSS of this process since it started (MB).

    ``/proc/self/status`` VmHWM, not ``getrusage``: Linux carries ru_maxrss over fork and exec,
    so a worker started by a 3 GB parent would report 3 GB whatever it used itself.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _irq(target: str, model: Path, calib: DataSet | None, out: Path, preset: str | None = None,
         adaround: bool = False) -> Path:
    import irq
    from irq.pipeline.targets import get_target

    # irq-onnx-adaround: the default (fast) pipeline with learned rounding before bias correction
    pipeline = get_target(target).pipeline.replace("bias-correct", "adaround,bias-correct") if adaround else None
    irq.compile(model, target, out, calib=calib, preset=preset, pipeline=pipeline)
    return out / ("model.onnx" if target.startswith("onnx") else "model.tflite")


def _ort(model: Path, calib: DataSet, out: Path, preprocess: bool, **kwargs: Any) -> Path:
    # Imported inside the timed call, as irq's rows import irq inside theirs: the import takes
    # 1.9 s and 277 MB (it loads torch and sympy), which only onnxruntime's rows should carry.
    from common import ort_quantize_static
    from onnxruntime.quantization import CalibrationMethod, QuantType

    named = {"QUInt8": QuantType.QUInt8, "Percentile": CalibrationMethod.Percentile}
    kwargs = {k: named.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}

    if preprocess:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(model), str(out / "pre.onnx"), skip_symbolic_shape=True)
        model = out / "pre.onnx"
    return ort_quantize_static(model, calib, out / "model.onnx", **kwargs)


def _nhwc(calib: DataSet) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(np.transpose(np.asarray(v), (0, 2, 3, 1)), dtype=np.float32)
            for k, v in calib.inputs.items()}


def _onnx2tf(model: Path, calib: DataSet, out: Path) -> Path:
    import onnx2tf

    from irq.backends.tflite.offline import captured_output, offline_onnx2tf, sample_images

    # onnx2tf overwrites its input file with onnxsim's output: hand it a copy, never the model.
    copy = out / model.name
    shutil.copyfile(model, copy)
    model = copy
    params = []
    for name, x in _nhwc(calib).items():
        np.save(out / f"{name}.npy", x)
        c = x.shape[-1]
        params.append([name, str(out / f"{name}.npy"), np.zeros((1, 1, 1, c), np.float32),
                       np.ones((1, 1, 1, c), np.float32)])
    with offline_onnx2tf(sample_images(calib.inputs)), captured_output():
        onnx2tf.convert(input_onnx_file_path=str(model), output_folder_path=str(out / "o2t"),
                        output_integer_quantized_tflite=True, custom_input_op_name_np_data_path=params,
                        non_verbose=True)
    path = out / "o2t" / f"{model.stem}_full_integer_quant.tflite"
    _write_sidecar(path, model)
    return path


def _tflite_plain(model: Path, calib: DataSet, out: Path) -> Path:
    import onnx
    import onnx_ir as ir
    import tensorflow as tf

    from irq.backends.tflite.convert import make_converter, representative_dataset
    from irq.backends.tflite.keras_build import build_keras, export_saved_model
    from irq.backends.tflite.offline import captured_output, offline_onnx2tf, sample_images
    from irq.backends.tflite.runner import sidecar_path, sidecar_text

    proto = onnx.shape_inference.infer_shapes(onnx.load(str(model)))
    graph = ir.serde.deserialize_model(proto).graph
    with offline_onnx2tf(sample_images(calib.inputs)), captured_output():
        build = build_keras(proto, graph)
        export_saved_model(build, out / "saved_model")
        converter = make_converter(out / "saved_model", "int8")
        converter.representative_dataset = representative_dataset(calib, build.inputs, build.model.inputs[0].shape[0])
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        data = converter.convert()
    path = out / "model.tflite"
    path.write_bytes(data)
    sidecar_path(path).write_text(sidecar_text(build.inputs, build.outputs, {"mode": "int8", "io": "int8"}))
    return path


def _write_sidecar(path: Path, model: Path) -> None:
    """I/O names for irq's LiteRT runner: onnx2tf keeps the ONNX names in its signature."""
    import onnx
    from ai_edge_litert.interpreter import Interpreter

    from irq.backends.tflite.keras_build import IOSpec
    from irq.backends.tflite.runner import sidecar_path, sidecar_text

    proto = onnx.load(str(model))
    sig = Interpreter(model_path=str(path)).get_signature_list()["serving_default"]
    ins = [IOSpec(i.name, s, (0, 2, 3, 1) if len(i.type.tensor_type.shape.dim) == 4 else
                  tuple(range(len(i.type.tensor_type.shape.dim))), "float32")
           for i, s in zip(proto.graph.input, sig["inputs"], strict=True)]
    outs = [IOSpec(o.name, s, tuple(range(len(o.type.tensor_type.shape.dim))), "float32")
            for o, s in zip(proto.graph.output, sig["outputs"], strict=True)]
    sidecar_path(path).write_text(sidecar_text(ins, outs, {"mode": "int8", "io": "int8"}))


def run_tool(tool: str, model: Path, calib_path: Path, out: Path) -> dict[str, Any]:
    """Run one tool; return what the parent needs (never raises: a failure is a result)."""
    out.mkdir(parents=True, exist_ok=True)
    calib = load_data(calib_path)
    calls = {
        "irq-onnx": lambda: _irq("onnx-int8", model, calib, out),
        "irq-onnx-accurate": lambda: _irq("onnx-int8", model, calib, out, "accurate"),
        "irq-onnx-max": lambda: _irq("onnx-int8", model, calib, out, "max"),
        "irq-onnx-adaround": lambda: _irq("onnx-int8", model, calib, out, adaround=True),
        "irq-tflite": lambda: _irq("tflite-int8", model, calib, out),
        "irq-tflite-fp32": lambda: _irq("tflite-fp32", model, calib, out),  # the data fixes dynamic shapes
        "ort-default": lambda: _ort(model, calib, out, False),
        "ort-pc": lambda: _ort(model, calib, out, True, per_channel=True, activation_type="QUInt8"),
        "ort-pc-pct": lambda: _ort(model, calib, out, True, per_channel=True, activation_type="QUInt8",
                                   calibrate_method="Percentile"),
        "onnx2tf-oiqt": lambda: _onnx2tf(model, calib, out),
        "tflite-plain": lambda: _tflite_plain(model, calib, out),
    }
    try:
        path, seconds = timed(calls[tool])
    except Exception as e:  # a bench row, not a crash: the tool's failure is the finding
        return {"tool": tool, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300],
                "peak_rss_mb": peak_rss_mb()}
    return {"tool": tool, "artifact": str(path), "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def worker_main(tool: str, model: str, calib: str, out: str) -> None:
    """Entry point of ``anchors.py --worker``: one JSON line on stdout."""
    print("ANCHOR " + json.dumps(run_tool(tool, Path(model), Path(calib), Path(out))), flush=True)
