"""CoreMLBackend: the IR -> an ML Program package (``model.mlpackage``), checked on read-back.

Target options (``target.options``):

* ``compute``: ``fp16`` (default) or ``fp32``;
* ``weight_scale_dtype``: ``auto`` (default), ``compute`` or ``fp32``: how int8 weights' scales
  are stored under fp16 compute (see :mod:`irq.backends.coreml.convert`);
* ``deployment_target``: iOS16/17/18 or macOS13/14/15, default iOS17
  (see :mod:`irq.backends.coreml.deploy` for what each allows);
* ``input_shapes`` / ``sequence_length``: fixed sizes for dynamic input dimensions
  (see :mod:`irq.backends.coreml.lower`);
* ``check``: run the read-back checks (default True) on ``check_samples`` batches (default 4).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from irq.backends.base import Artifact, Backend, Runner
from irq.backends.coreml.convert import compute_precision, to_mlmodel
from irq.backends.coreml.deploy import Deployment
from irq.backends.coreml.lower import build_program
from irq.backends.coreml.readback import (
    check_activations,
    check_structure,
    check_weights,
    load_program,
    op_census,
    read_metadata,
)
from irq.backends.coreml.runner import CoreMLRunner
from irq.errors import VerificationError
from irq.io import atomic_path
from irq.ir.ort import make_session
from irq.verify.metrics import sample_cosines

if TYPE_CHECKING:
    from irq.ir.model import QModel
    from irq.pipeline.targets import Target

PACKAGE = "model.mlpackage"


class CoreMLBackend(Backend):
    """Lowers the IR to a Core ML ML Program with coremltools' MIL builder."""

    name = "coreml"
    suffix = ".mlpackage"
    needs_static_shapes = True
    host_latency = False

    def lower(self, qmodel: QModel, target: Target, out_dir: Path) -> Artifact:
        """Build, convert and save ``out_dir/model.mlpackage`` atomically, then describe it."""
        options = dict(target.options)
        deployment = Deployment(options.get("deployment_target", "iOS17"))
        compute, scales = options.get("compute", "fp16"), options.get("weight_scale_dtype", "auto")
        compute_precision(compute, scales)  # option errors first
        lowered = build_program(qmodel, deployment, options)  # fails before anything is written
        mlmodel = to_mlmodel(lowered, deployment, compute, scales)
        path = Path(out_dir) / PACKAGE
        with atomic_path(path) as tmp:
            mlmodel.save(str(tmp))
            stable_manifest(tmp)
            checks = {}
            if options.get("check", True):
                feeds = check_feeds(qmodel, lowered.inputs, int(options.get("check_samples", 4)))
                checks = self.check(tmp, qmodel, feeds)
            census = op_census(load_program(tmp))
        weight_count = sum(census.get(op, 0) for op in (deployment.weight_op,))
        info: dict[str, Any] = {
            "deployment_target": deployment.name, "compute_precision": compute, "weight_scale_dtype": scales,
            "weight_op": deployment.weight_op, "op_census": census,
            "weights_quantized": weight_count,
            "input_shapes": {i["onnx"]: i["shape"] for i in lowered.inputs},
            "checks": checks,
        }
        artifact = Artifact(path, target.name, CoreMLRunner.platform_runtime(), info)
        info["bytes"] = artifact.size_bytes
        return artifact

    def runner(self, artifact_path: Path, reference: QModel | None = None) -> Runner:
        """A runner for a package this backend wrote (the package carries its I/O names)."""
        path = Path(artifact_path)
        if path.suffix != self.suffix and (path / PACKAGE).exists():
            path = path / PACKAGE
        return CoreMLRunner(path)

    @staticmethod
    def check(path: Path, qmodel: QModel, feeds: list[dict[str, np.ndarray]] | None = None) -> dict[str, Any]:
        """Read ``path`` back and compare it with the IR: weights, structure and numerics."""
        program = load_program(path)
        meta = read_metadata(path)
        weights = check_weights(program, qmodel, meta["weights"])
        activations = check_activations(program, qmodel)
        onnx_census: dict[str, int] = {}
        for node in qmodel.graph:
            onnx_census[node.op_type] = onnx_census.get(node.op_type, 0) + 1
        structure = check_structure(op_census(program), onnx_census, len(meta["weights"]))
        feeds = feeds if feeds is not None else check_feeds(qmodel, meta["io"]["inputs"])
        try:
            numerics = compare_with_onnxruntime(CoreMLRunner(path), qmodel, feeds)
        except VerificationError as e:  # e.g. an op the evaluator lacks: record it, keep the package
            numerics = {"error": str(e), "max_abs_error": None}
        return {"weights_bit_exact": weights["bit_exact"], "weights": weights,
                "activation_scales_exact": activations["exact"], "activations": activations,
                "structure_match": structure["match"], "structure": structure,
                "readback_max_abs_error": numerics["max_abs_error"], "numerics": numerics}


def stable_manifest(package: Path) -> None:
    """Replace the random UUIDs coremltools writes into Manifest.json by ones derived from each item's path.

    The package is then the same byte for byte for the same model; identifiers stay unique
    within it, which is all Core ML asks of them.
    """
    manifest = Path(package) / "Manifest.json"
    meta = json.loads(manifest.read_text())
    fresh = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, f"irq:{entry['path']}"))
             for old, entry in meta["itemInfoEntries"].items()}
    meta["itemInfoEntries"] = {fresh[old]: entry for old, entry in sorted(meta["itemInfoEntries"].items(),
                                                                          key=lambda kv: kv[1]["path"])}
    meta["rootModelIdentifier"] = fresh[meta["rootModelIdentifier"]]
    manifest.write_text(json.dumps(meta, indent=4) + "\n")


def check_feeds(qmodel: QModel, inputs: list[dict[str, Any]], samples: int = 4,
                seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``samples`` feeds of the package's fixed input shapes: calibration data when it fits, else synthetic.

    Calibration rows go where the data says (a recurrent state's batch is not on axis 0).
    Synthetic float inputs are standard normal (a local generator, never the global one); integer
    inputs are all ones (a valid token id, mask and segment id for BERT-like models).
    """
    want = {spec["onnx"]: (list(spec["shape"]), np.dtype(spec["dtype"])) for spec in inputs}
    data = qmodel.calibration
    if data is not None and set(want) <= set(data.inputs):
        rows = next((want[k][0][a] for k in want if (a := data.batch_axis(k)) is not None), 1)
        feeds = [{k: np.asarray(v).astype(want[k][1]) for k, v in data.feed(i * rows, (i + 1) * rows).items()
                  if k in want} for i in range(min(samples, len(data) // max(rows, 1)))]
        if feeds and all(list(f[k].shape) == want[k][0] for f in feeds for k in want):
            return feeds
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else np.ones(shape, dtype)
             for k, (shape, dtype) in want.items()} for _ in range(samples)]


def compare_with_onnxruntime(runner: Runner, qmodel: QModel, feeds: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Largest absolute difference per output between ``runner`` and onnxruntime on the IR, feed by feed."""
    proto = qmodel.to_proto()
    # onnx 1.19 writes IR version 12 by default, one above what onnxruntime 1.23 reads.
    proto.ir_version = min(proto.ir_version, 10)
    # The IR's own arithmetic (Q/DQ as written), not onnxruntime's fused int8 kernels, which
    # saturate on x86 CPUs without VNNI: the package is compared with what the IR means.
    session = make_session(proto, optimize=False)
    pairs = [(session.run(None, feed), runner.run(feed)) for feed in feeds]
    outputs = {}
    for index, out in enumerate(session.get_outputs()):
        e = np.stack([np.asarray(want[index], np.float64).ravel() for want, _ in pairs])
        g = np.stack([np.asarray(got[index], np.float64).ravel() for _, got in pairs])
        cosine = sample_cosines(e, g)
        outputs[out.name] = {"max_abs_error": float(np.max(np.abs(e - g), initial=0.0)),
                             "max_abs_reference": float(np.max(np.abs(e), initial=0.0)),
                             "min_cosine": float(cosine.min(initial=1.0))}
    return {"runtime": runner.runtime, "samples": len(feeds),
            "max_abs_error": max((o["max_abs_error"] for o in outputs.values()), default=0.0),
            "min_cosine": min((o["min_cosine"] for o in outputs.values()), default=1.0), "outputs": outputs}
