"""ONNX backend: the IR (Q/DQ already inserted by the passes) as a file for onnxruntime."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

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
        return Artifact(path, target.name, OnnxRunner.runtime,
                        {"lower_seconds": round(time.perf_counter() - start, 3), "op_census": census})

    def runner(self, artifact_path: Path, reference: QModel | None = None) -> Runner:
        """An onnxruntime session on the file.

        An artifact for Arm kernels (which do not saturate) verified on an x86 CPU whose int8
        kernels do runs with Q/DQ as written, so this machine's kernels do not misreport it.
        """
        meta = {p.key: p.value for p in onnx.load(str(artifact_path), load_external_data=False).metadata_props}
        arm_on_saturating_host = meta.get(KERNELS_KEY) == "arm" and host_int8_saturates()
        return OnnxRunner(str(artifact_path), reference_arithmetic=arm_on_saturating_host)
