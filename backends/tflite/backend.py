"""The TFLite backend: float ONNX -> Keras (onnx2tf) -> SavedModel -> .tflite (TFLite converter).

onnx2tf builds only the Keras model (its own full conversion takes minutes and writes seven
files); the TFLite converter does the rest. Full-integer models are quantized with the IR's
ranges and plan, then checked: no op may stay float unless the plan asked for it, and no
activation scale may be degenerate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnx_ir as ir

from irq.backends.base import Artifact, Backend, Runner
from irq.backends.tflite import census, convert, hazards, ranges
from irq.backends.tflite.decompose16 import decompose_for_16x8
from irq.backends.tflite.flatmodel import FlatModel
from irq.backends.tflite.keras_build import KerasBuild, build_keras, export_saved_model
from irq.backends.tflite.mapping import map_tensors
from irq.backends.tflite.offline import (
    THREADS,
    CapturedOutput,
    captured_output,
    limit_tensorflow_threads,
    offline_onnx2tf,
    sample_images,
)
from irq.backends.tflite.runner import TFLiteRunner, sidecar_path, sidecar_text
from irq.errors import LoweringError
from irq.io import atomic_path, atomic_write_text
from irq.ir.edit import Namer, UniqueNames, add_to_bias, scope_safe_name
from irq.ir.model import node_label
from irq.quant.spec import Precision, TensorRange

if TYPE_CHECKING:
    from irq.data import DataSet
    from irq.ir.model import QModel
    from irq.pipeline.targets import Target


#: Samples the TFLite converter calibrates on when the IR supplies the ranges.
CONVERTER_SAMPLES = 16

class TFLiteBackend(Backend):
    """Lowers a float IR to ``model.tflite`` (int8, fp16, dynamic-range or fp32)."""

    name = "tflite"
    suffix = ".tflite"
    needs_static_shapes = True
    latency_threads = THREADS  # LiteRT's XNNPACK threads, on both sides of the comparison

    def latency_baseline(self, artifact_path: Path) -> str | None:
        """A quantized .tflite is timed against the float .tflite of the same model."""
        try:
            mode = json.loads(sidecar_path(artifact_path).read_text()).get("mode")
        except (OSError, ValueError):
            mode = None
        return None if mode == "fp32" else "tflite-fp32"

    def lower(self, qmodel: QModel, target: Target, out_dir: Path) -> Artifact:
        """Write ``out_dir/model.tflite`` and its I/O sidecar; describe them in the Artifact."""
        mode, io, range_source, activations = _options(target)
        started = time.perf_counter()
        graph_model = _prepared_graph(qmodel)
        graph = graph_model.graph
        if mode == "int8":
            _correct_biases(qmodel, graph)
        hazards.check_float_graph(graph, qmodel.name)
        spelled = decompose_for_16x8(graph) if mode == "int8" and activations == "int16" else []
        renamed = _scope_safe_node_names(graph)
        # This function's view of the plan uses the private graph's (TensorFlow-safe) node names.
        qmodel = dataclasses.replace(qmodel, plan={renamed.get(k, k): d for k, d in qmodel.plan.items()})
        known = dict(qmodel.ranges)
        info: dict[str, Any] = {"mode": mode, "io": io if mode == "int8" else "float"}
        if mode == "int8":
            info["activations"] = activations
        if spelled:
            info["decomposed_for_16x8"] = len(spelled)
        if mode == "int8" and qmodel.calibration is None:
            raise LoweringError(f"{qmodel.name}: tflite int8 needs calibration data")
        info["maxpool_padding"] = _fix_maxpools(qmodel, graph, known, structural_only=mode != "int8")
        proto = _with_shapes(ir.serde.serialize_model(graph_model))
        try:
            with captured_output() as printed:
                build, data = _convert(proto, graph, qmodel, known, (mode, io, range_source, activations), info,
                                       printed)
        except LoweringError as e:
            raise LoweringError(f"{qmodel.name}: {e}") from e
        back = {new: old for old, new in renamed.items()}
        for key in ("float_nodes_kept", "float_nodes_unmatched", "float_nodes_not_applied"):
            if key in info:
                info[key] = sorted(back.get(n, n) for n in info[key])
        info["ops"] = census.op_census(FlatModel(data))
        info["seconds"]["total"] = round(time.perf_counter() - started, 2)
        info["inputs"] = [s.onnx_name for s in build.inputs]
        info["outputs"] = [s.onnx_name for s in build.outputs]
        path = Path(out_dir) / "model.tflite"
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        atomic_write_text(sidecar_path(path), sidecar_text(build.inputs, build.outputs, info))
        return Artifact(path, target=target.name, runtime="litert", info=info)

    def runner(self, artifact_path: Path, reference: QModel | None = None) -> Runner:
        """A LiteRT runner (XNNPACK, two threads) taking and returning ONNX-layout arrays."""
        return TFLiteRunner(Path(artifact_path), reference)


def _convert(proto: onnx.ModelProto, graph: ir.Graph, qmodel: QModel, known: dict[str, TensorRange],
             options: tuple[str, str, str, str], info: dict, printed: CapturedOutput) -> tuple[KerasBuild, bytes]:
    """ONNX -> Keras -> SavedModel (in a scratch directory) -> .tflite bytes; timings into ``info``."""
    mode, io, range_source, activations = options
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="irq-tflite-") as work:
        limit_tensorflow_threads()
        tick = time.perf_counter()
        with offline_onnx2tf(sample_images(qmodel.calibration.inputs if qmodel.calibration else None)):
            build = _run_onnx2tf(proto, graph, printed)
        seconds["onnx2tf"] = time.perf_counter() - tick
        tick = time.perf_counter()
        export_saved_model(build, Path(work) / "saved_model")
        converter = convert.make_converter(Path(work) / "saved_model", mode)
        seconds["saved_model"] = time.perf_counter() - tick
        tick = time.perf_counter()
        if mode == "int8" and activations == "int16":
            data = _sixteen_by_eight(converter, build, qmodel, io, info)
        elif mode == "int8":
            data = _full_integer(converter, build, graph, qmodel, known, io, range_source, info)
        else:
            data = convert.convert_float(converter)
            if mode == "dynamic":  # the converter has no denylist for dynamic-range weights
                info["float_nodes_not_applied"] = sorted(_float_nodes(qmodel))
        seconds["convert"] = time.perf_counter() - tick
    info["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    return build, data


def _options(target: Target) -> tuple[str, str, str, str]:
    """Validated ``mode``, ``io``, ``ranges`` and ``activations`` options of a tflite target."""
    mode = str(target.options.get("mode"))
    io = str(target.options.get("io", "int8"))
    source = str(target.options.get("ranges", "ir"))
    activations = str(target.options.get("activations", "int8"))
    if activations not in convert.ACTIVATION_TYPES:
        raise LoweringError(f"target {target.name}: activations must be one of {convert.ACTIVATION_TYPES}, "
                            f"not {activations!r}")
    if mode not in convert.MODES:
        raise LoweringError(f"target {target.name}: mode must be one of {convert.MODES}, not {mode!r}")
    if io not in convert.IO_TYPES:
        raise LoweringError(f"target {target.name}: io must be one of {convert.IO_TYPES}, not {io!r}")
    if source not in ("ir", "tflite"):
        raise LoweringError(f"target {target.name}: ranges must be 'ir' or 'tflite', not {source!r}")
    return mode, io, source, activations


def _with_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model with ONNX shape inference applied where it succeeds.

    onnx2tf decides layouts from the shapes it is given; the hazard rewrites need them for
    auto_pad/ceil_mode MaxPools (and say so when they are missing).
    """
    with contextlib.suppress(onnx.shape_inference.InferenceError):
        proto = onnx.shape_inference.infer_shapes(proto)
    return proto


def _correct_biases(qmodel: QModel, graph: ir.Graph) -> None:
    """Add bias-correct's measured shifts to the int8 Convs' float biases before the converter sees them.

    The converter rounds Conv weights as insert-qdq would (symmetric, per channel, [-127, 127]),
    so the shift measured for those weights holds. Dense layers are left alone: the converter
    quantizes them per tensor, not per channel as the shift was measured.
    """
    if not qmodel.bias_shifts:
        return
    namer = Namer(graph)
    for node in graph:
        label = node_label(node)
        decision = qmodel.plan.get(label)
        if node.op_type == "Conv" and label in qmodel.bias_shifts and decision is not None \
                and decision.precision is Precision.INT8 and decision.per_channel:
            add_to_bias(graph, namer, node, qmodel.bias_shifts[label])


def _prepared_graph(qmodel: QModel) -> ir.Model:
    """A private copy of the graph with inferred shapes (the caller's IR is never modified)."""
    return ir.serde.deserialize_model(_with_shapes(qmodel.to_proto()))


def _scope_safe_node_names(graph: ir.Graph) -> dict[str, str]:
    """Rename nodes whose names TensorFlow rejects as scopes (Paddle's ``Softmax@0``, TFLite's ``a;b``).

    onnx2tf names Keras layers after ONNX nodes. Returns old label -> new label for every node
    renamed; value names are left alone (ranges and the runner use them).
    """
    names = UniqueNames({n.name for n in graph if n.name})
    renamed = {}
    for node in graph:
        if node.name and _SCOPE.fullmatch(node.name):
            continue
        old = node_label(node)
        node.name = scope_safe_name(node.name or f"{node.op_type}_{node.outputs[0].name or 'out'}", names, "n")
        renamed[old] = node.name
    return renamed


_SCOPE = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_./>-]*")


def _float_nodes(qmodel: QModel) -> set[str]:
    """ONNX nodes the plan keeps in float."""
    return {name for name, d in qmodel.plan.items() if d.precision.is_float}


def _run_onnx2tf(proto: onnx.ModelProto, graph: ir.Graph, printed: CapturedOutput) -> KerasBuild:
    """build_keras, with onnx2tf's assorted exceptions reported as LoweringError.

    onnx2tf explains its failures in what it prints, so the message ends with that output.
    """
    try:
        return build_keras(proto, graph)
    except LoweringError:
        raise
    except Exception as e:  # onnx2tf raises whatever its op handlers raise
        raise LoweringError(f"onnx2tf failed: {type(e).__name__}: {e}\nits last output:\n{printed.tail()}") from e


def _fix_maxpools(qmodel: QModel, graph: ir.Graph, known: dict[str, TensorRange],
                  structural_only: bool) -> list[dict]:
    """Split MaxPool padding into finite Pads; give each Pad output its input's range.

    Float modes only take the exact ReLU/Clip-bounded rewrites: onnx2tf's own float padding
    (the dtype minimum) is correct there, merely slower under XNNPACK.
    """
    data = qmodel.calibration

    def observe(names: list[str]) -> dict[str, float]:
        if data is None:
            raise LoweringError(f"no range or calibration data for MaxPool input(s) {', '.join(names)}")
        return _observed_minima(qmodel.to_proto(), names, data)

    fixes = hazards.split_maxpool_padding(graph, known, observe, structural_only)
    for fix in fixes:
        source = next(n for n in graph if n.outputs and n.outputs[0].name == fix.pad_output).inputs[0]
        r = known.get(source.name or "") if source is not None else None
        if r is not None:
            known[fix.pad_output] = TensorRange(min(r.lo, fix.pad_value), r.hi, r.method)
    return [{"node": f.node, "pad_value": f.pad_value, "bound": f.source} for f in fixes]


def _observed_minima(proto: onnx.ModelProto, names: list[str], data: DataSet) -> dict[str, float]:
    """Minimum of each named value over the calibration data (for MaxPool inputs without a range)."""
    import onnxruntime as ort

    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    del proto.graph.output[:]
    proto.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    minima = dict.fromkeys(names, np.inf)
    dims = [i.type.tensor_type.shape.dim for i in proto.graph.input]
    fixed = dims[0][0].dim_value if dims and dims[0] else 0  # 0 when the batch is symbolic
    for batch in data.batches(fixed or 32):
        for name, out in zip(names, session.run(names, batch), strict=True):
            minima[name] = min(minima[name], float(np.min(out)))
    return minima


def _sixteen_by_eight(converter: object, build: KerasBuild, qmodel: QModel, io: str, info: dict) -> bytes:
    """TFLite's 16x8 scheme for the whole model, by the converter's own calibration and quantizer.

    Its MLIR quantizer (the one that takes irq's ranges and a float denylist) writes 16x8 models
    that load and answer wrongly (fashion-cnn: top-1 10 %, zero points of -1 that LiteRT's
    kernels refuse); the converter itself uses the older quantizer for int16, so irq does too:
    min-max ranges from the calibration set, no layer kept float.
    """
    assert qmodel.calibration is not None
    dataset = convert.representative_dataset(qmodel.calibration, build.inputs, build.model.inputs[0].shape[0])
    data = convert.sixteen_by_eight(converter, dataset, io)
    float_nodes = _float_nodes(qmodel)
    if float_nodes:
        info["float_nodes_not_applied"] = sorted(float_nodes)
    info["range_fidelity"] = {"source": "tflite"}
    return data


def _full_integer(converter: object, build: KerasBuild, graph: ir.Graph, qmodel: QModel,
                  known: dict[str, TensorRange], io: str, range_source: str, info: dict) -> bytes:
    """Calibrate, inject the IR's ranges, quantize with the plan's float ops denylisted, check."""
    assert qmodel.calibration is not None
    batch = build.model.inputs[0].shape[0]
    calib = qmodel.calibration
    if range_source == "ir":
        # The IR's ranges replace the converter's for every mapped tensor; its own calibration
        # only has to cover the few tensors inside one ONNX node, and it was most of the time.
        calib = calib.head(max(CONVERTER_SAMPLES, batch or 1))
    dataset = convert.representative_dataset(calib, build.inputs, batch)
    calibrated = FlatModel(convert.calibrate(converter, dataset))
    cal_map = map_tensors(calibrated, build, graph)
    converter_stats = {calibrated.tensor_name(i): s for i in calibrated.activations()
                       if (s := calibrated.min_max(i)) is not None}
    injected = ranges.inject_ranges(calibrated, cal_map.values, known) if range_source == "ir" else 0
    float_nodes = _float_nodes(qmodel)
    deny = sorted({calibrated.tensor_name(t) for op in calibrated.ops()
                   if cal_map.op_nodes.get(op.index, set()) & float_nodes for t in op.outputs})
    data = convert.quantize(calibrated.to_bytes(), io, deny)
    final = FlatModel(data)
    tmap = map_tensors(final, build, graph)
    broken = census.degenerate_scales(final, tmap)
    if broken:
        raise LoweringError(f"degenerate int8 scales on {', '.join(broken[:5])}")
    floats = census.float_ops(final, tmap)
    int8_nodes = {name for name, d in qmodel.plan.items() if not d.precision.is_float}
    # A float op is wrong only when every ONNX node it comes from is planned int8; ops the plan
    # leaves out (no int8 kernel anywhere, e.g. Sqrt) run in float between (de)quantizers.
    unexpected = [f for f in floats if f.onnx_nodes and set(f.onnx_nodes) <= int8_nodes]
    # The converter may run an int8-planned op in float when a float op feeds it (all-MiniLM's
    # final Clip after ReduceL2, whose Sqrt has no int8 kernel): valid, only less integer.
    fed = census.fed_by_float_ops(final, [f.index for f in unexpected])
    if any(f.index not in fed for f in unexpected):
        raise LoweringError("ops stayed float in the int8 model although the plan wants them int8: "
                            + "; ".join(f.describe() for f in unexpected if f.index not in fed))
    if unexpected:
        info["float_ops_after_float"] = [f.describe() for f in unexpected]
    kept = {n for f in floats for n in f.onnx_nodes} & float_nodes
    info["float_ops"] = [f.describe() for f in floats]
    info["float_ops_unplanned"] = [f.describe() for f in floats if not set(f.onnx_nodes) & (float_nodes | int8_nodes)]
    info["float_nodes_kept"] = sorted(kept)
    info["float_nodes_unmatched"] = sorted(float_nodes - kept)
    fid = ranges.fidelity(final, tmap.values, known, converter_stats)
    info["range_fidelity"] = {**fid, "source": range_source, "injected": injected}
    return data
