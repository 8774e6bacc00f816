"""The verification part of the report: accuracy, error and latency of an artifact vs float."""

from __future__ import annotations

from typing import Any

from irq.backends.base import Runner
from irq.backends.onnx_qdq import OnnxRunner
from irq.data import DataSet
from irq.verify import check_labels, compare, is_classifier, latency, run_dataset


def verification_section(float_model: bytes, runner: Runner, data: DataSet,
                         measure_latency: bool = True) -> dict[str, Any]:
    """Run float (onnxruntime) and the artifact (its own runtime) on ``data`` and compare."""
    float_runner = OnnxRunner(float_model)
    ref = run_dataset(float_runner, data)
    if is_classifier(ref[0]):
        check_labels(data, ref[0].shape[1])
    out = run_dataset(runner, data)
    section: dict[str, Any] = {"samples": len(data), "verification": compare(ref, out, data.labels)}
    v = section["verification"]
    for key in ("accuracy", "agreement", "error"):
        if key in v:
            section[key] = v.pop(key)
    if measure_latency:
        f, a = latency(float_runner, data), latency(runner, data)
        section["latency"] = {"float": f, "artifact": a, "speedup": f["median_ms"] / max(a["median_ms"], 1e-9),
                              "float_runtime": float_runner.runtime, "artifact_runtime": runner.runtime}
        if section["latency"]["speedup"] < 1.0:
            section.setdefault("warnings", []).append(
                f"honest-speed: the artifact is {1 / section['latency']['speedup']:.2f}x SLOWER than float "
                f"on this machine ({a['median_ms']:.2f} ms vs {f['median_ms']:.2f} ms)")
    return section
