"""ONNX backend: the IR (Q/DQ already inserted by the passes) as a file for onnxruntime."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import ml_dtypes
import numpy as np
import onnx

from irq.errors import LoweringError, VerificationError
from irq.io import atomic_write_bytes
from irq.ir.ort import batch_limit, make_session
from irq.quant.weight_range import host_int8_saturates

from .base import Artifact, Backend, Runner

if TYPE_CHECKING:
    from irq.ir.model import QModel
    from irq.pipeline.targets import Target


#: Model metadata naming the CPU kernels the artifact was built for ("arm" or "x86").
KERNELS_KEY = "irq.kernels"


def _pack_int4(proto: onnx.ModelProto, names: list[str]) -> int:
    """Store the int4 weights ``names`` two to a byte; return how many were packed.

    insert-qdq holds int4 values in int8 initializers (the IR's and Core ML's form). ONNX's
    DequantizeLinear takes INT4 only from opset 21, which would change other ops' signatures;
    onnxruntime's com.microsoft DequantizeLinear takes it at any opset, so the file halves
    without touching the rest of the graph. The price: onnxruntime has no int4 convolution, so it
    dequantizes these weights on every run (EfficientNet-Lite0: 15 % of float's size, 5x slower
    than int4 values held in int8, which keep its int8 kernels; option ``int4_storage=int8``).
    """
    wanted = set(names)
    if not wanted:
        return 0
    inits = {i.name: i for i in proto.graph.initializer}
    packed = 0
    for node in proto.graph.node:
        if node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx") or node.input[0] not in wanted:
            continue
        for name in node.input[::2]:  # the values and the zero point share their type
            if name and name in inits and inits[name].data_type == onnx.TensorProto.INT8:
                array = onnx.numpy_helper.to_array(inits[name])
                inits[name].CopyFrom(onnx.numpy_helper.from_array(array.astype(ml_dtypes.int4), name))
        node.domain = "com.microsoft"
        packed += 1
    if packed and not any(op.domain == "com.microsoft" for op in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return packed


class OnnxRunner(Runner):
    """Runs an ONNX file in onnxruntime on the CPU."""

    runtime = "onnxruntime"

    def __init__(self, model: str | bytes | onnx.ModelProto, threads: int | None = None,
                 reference_arithmetic: bool = False) -> None:
        self.session = make_session(model, threads, optimize=not reference_arithmetic)
        if reference_arithmetic:
            self.runtime = "onnxruntime (reference Q/DQ arithmetic)"
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch."""
        return self.session.run(self.output_names, {k: feeds[k] for k in self.input_names})

    @property
    def max_batch(self) -> int | None:
        """1 for models exported with a fixed batch of one."""
        return batch_limit(self.session)


class OnnxBackend(Backend):
    """Writes ``model.onnx``: QDQ for the int8 targets, float16 or float otherwise."""

    name = "onnx"
    suffix = ".onnx"
    per_layer_error = True

    def latency_runner(self, artifact_path: Path, reference: QModel | None, threads: int) -> Runner:
        """Onnxruntime on the artifact with ``threads`` intra-op threads (the same as the float side)."""
        return OnnxRunner(str(artifact_path), threads=threads)

    def lower(self, qmodel: QModel, target: Target, out_dir: Path) -> Artifact:
        """Check the graph and write it atomically."""
        start = time.perf_counter()
        proto = qmodel.to_proto()
        # Intermediate shapes are re-inferred by onnxruntime at load; keeping them only costs
        # bytes (0.2 % of EfficientNet-Lite0's int8 file).
        proto.graph.ClearField("value_info")
        storage = str(target.options.get("int4_storage", "packed"))
        if storage not in ("packed", "int8"):
            raise LoweringError(f"option int4_storage must be packed or int8, not {storage!r}")
        int4 = qmodel.analysis.of("insert-qdq").get("int4_weights", []) if storage == "packed" else []
        packed = _pack_int4(proto, int4)
        try:
            onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as e:
            raise LoweringError(f"{qmodel.name}: the lowered ONNX graph is invalid: "
                                f"{str(e).splitlines()[0]}") from e
        kernels = str(target.options.get("kernels", ""))
        if kernels:
            onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props},
                                                KERNELS_KEY: kernels})
        data = proto.SerializeToString()
        try:  # never write what onnxruntime will not load with its default optimizations
            make_session(data, threads=1)
        except VerificationError as e:
            raise LoweringError(f"{qmodel.name}: the lowered ONNX graph does not load in onnxruntime: "
                                f"{str(e).removeprefix('onnxruntime cannot load the model: ')[:300]}") from e
        path = Path(out_dir) / "model.onnx"
        atomic_write_bytes(path, data)
        census: dict[str, int] = {}
        for node in proto.graph.node:
            census[node.op_type] = census.get(node.op_type, 0) + 1
        info: dict[str, object] = {"lower_seconds": round(time.perf_counter() - start, 3), "op_census": census}
        if packed:
            info["int4_packed_weights"] = packed
        return Artifact(path, target.name, OnnxRunner.runtime, info)

    def runner(self, artifact_path: Path, reference: QModel | None = None) -> Runner:
        """An onnxruntime session on the file.

        An artifact for Arm kernels (which do not saturate) verified on an x86 CPU whose int8
        kernels do runs with Q/DQ as written, so this machine's kernels do not misreport it.
        """
        meta = {p.key: p.value for p in onnx.load(str(artifact_path), load_external_data=False).metadata_props}
        arm_on_saturating_host = meta.get(KERNELS_KEY) == "arm" and host_int8_saturates()
        return OnnxRunner(str(artifact_path), reference_arithmetic=arm_on_saturating_host)
