"""report.json: the contract other tools parse. Built from the IR, the artifact and verification."""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from irq.backends.base import Artifact
from irq.errors import VerificationError
from irq.io import atomic_write_text
from irq.ir.model import QModel, node_label
from irq.pipeline.targets import Target
from irq.quant.weight_range import range_decision
from irq.report.model import Report


def layers_section(qmodel: QModel) -> list[dict[str, Any]]:
    """Each planned layer's precision, in graph order (nodes removed by rewrites included)."""
    ops = {node_label(n): n.op_type for n in qmodel.graph}
    return [{"name": name, "op_type": ops.get(name, "?"), "precision": d.precision.value,
             "granularity": d.granularity.value, "reason": d.reason,
              "source": d.source.value if d.source else "default"}
            for name, d in qmodel.plan.items()]


def _sizes(float_model: QModel, onnx_bytes: int, artifact: int) -> dict[str, Any]:
    """Artifact size against the model the user gave (the original file when it was not ONNX)."""
    source = float_model.analysis.source
    if source is not None and Path(source.path).is_file():
        base = Path(source.path).stat().st_size
        return {"float": base, "artifact": artifact, "ratio": artifact / max(base, 1),
                "float_is": f"the original {source.format} file"}
    return {"float": onnx_bytes, "artifact": artifact, "ratio": artifact / max(onnx_bytes, 1)}


def _passes(qmodel: QModel, timings: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """Each pass's time, with the record it left of what it did (on its last run: the record is that run's)."""
    last = {name: i for i, (name, _) in enumerate(timings)}
    records = qmodel.analysis.passes
    return [{"name": name, "seconds": round(seconds, 4),
             **({"did": records[name]} if last[name] == i and name in records else {})}
            for i, (name, seconds) in enumerate(timings)]


def build_report(float_model: QModel, float_bytes: bytes, qmodel: QModel, target: Target,
                 artifact: Artifact, timings: list[tuple[str, float]]) -> Report:
    """The static part of the report (no runtime measurements)."""
    unplanned = artifact.info.get("float_ops_unplanned") or []
    calibration = qmodel.analysis.calibration
    return Report(
        model=float_model.name, target=target.name, backend=target.backend, preset=target.preset,
        artifact=str(artifact.path), runtime=artifact.runtime,
        size_bytes=_sizes(float_model, len(float_bytes), artifact.size_bytes),
        scheme={"activation": qmodel.scheme.activation.value, "weight": qmodel.scheme.weight.value,
                "per_channel": qmodel.scheme.per_channel, "calibration": qmodel.scheme.calibration,
                "weight_range": range_decision(qmodel.scheme)},
        passes=_passes(qmodel, timings), calibration=calibration.to_json() if calibration else None,
        hazards=qmodel.analysis.hazards, layers=layers_section(qmodel), artifact_info=artifact.info,
        warnings=[f"float-op: {op} runs in float inside the integer model (the target has no integer kernel "
                  "for it)" for op in unplanned])


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars as Python numbers and inf/nan as strings (JSON has neither)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # JSON has no inf/nan; keep them readable
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item"):
        return jsonable(obj.item())
    return obj


@cache
def report_schema() -> dict[str, Any]:
    """The JSON schema of report.json."""
    return json.loads(resources.files("irq").joinpath("schema/report.schema.json").read_text())


def validate_report(report: dict[str, Any]) -> None:
    """VerificationError when ``report`` breaks the schema."""
    import jsonschema

    try:
        jsonschema.validate(jsonable(report), report_schema())
    except jsonschema.ValidationError as e:
        path = "/".join(str(p) for p in e.absolute_path)
        raise VerificationError(f"report.json breaks its schema at {path or '<root>'}: {e.message}") from e


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Validate and write report.json atomically."""
    validate_report(report)
    atomic_write_text(path, json.dumps(jsonable(report), indent=2) + "\n")
