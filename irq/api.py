"""The Python API beside ``compile``: audit and verify, mirroring the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from irq.data import DataSet, load_data
from irq.data.conform import conform
from irq.errors import InputError
from irq.pipeline.targets import get_backend

if TYPE_CHECKING:
    from irq.verify.checks import VerifyOptions
    from irq.verify.gates import Budgets

_SUFFIX_BACKEND = {".onnx": "onnx", ".tflite": "tflite", ".mlpackage": "coreml"}


def audit(model: Any) -> dict[str, Any]:
    """The audit of a model after clean-up: census, sizes, quantizable layers, hazards."""
    from irq.frontends import import_model
    from irq.pipeline.infra import PassManager
    from irq.pipeline.registry import parse_pipeline
    from irq.pipeline.targets import CLEANUP

    qmodel = PassManager(parse_pipeline(f"{CLEANUP},analyze"))(import_model(model)).model
    return qmodel.analysis.audit or {}


def backend_for(artifact: Path) -> str:
    """The backend that wrote ``artifact``, from its suffix."""
    try:
        return _SUFFIX_BACKEND[Path(artifact).suffix]
    except KeyError:
        raise InputError(f"{artifact}: unknown artifact type (expected {', '.join(_SUFFIX_BACKEND)})") from None


def verify(model: Any, artifact: str | Path, data: str | Path | DataSet, out: str | Path | None = None,
           measure_latency: bool = True, *, budgets: Budgets | None = None,
           checks: VerifyOptions | None = None, batch_axes: dict[str, int] | None = None,
           output: str | None = None) -> dict[str, Any]:
    """Recompute the verification part of the report for any artifact against its float model.

    Writes ``out`` (report.json) and the HTML page beside it when ``out`` is given; a missed
    budget raises BudgetError after that.
    """
    from irq.compiler import float_baseline
    from irq.frontends import import_model
    from irq.report.model import Report
    from irq.verify.checks import VerifyOptions, extended_checks, finalize, verify_against_float

    artifact = Path(artifact)
    if not artifact.exists():
        raise InputError(f"{artifact}: artifact not found")
    float_model = import_model(model)
    dataset = conform(load_data(data), float_model.graph, "evaluation", batch_axes)
    backend_name = backend_for(artifact)
    backend = get_backend(backend_name)
    float_bytes = float_model.to_bytes()
    size = sum(p.stat().st_size for p in artifact.rglob("*") if p.is_file()) if artifact.is_dir() \
        else artifact.stat().st_size
    report = Report(model=float_model.name, target=backend.name, artifact=str(artifact),
                    size_bytes={"float": len(float_bytes), "artifact": size, "ratio": size / max(len(float_bytes), 1)})
    runner = backend.runner(artifact, float_model)
    verify_against_float(report, float_model, runner, dataset, measure_latency=False, output=output)
    extended_checks(report, float_model, artifact, backend, runner, dataset,
                    checks or VerifyOptions(measure_latency=measure_latency), float_baseline(float_model))
    return finalize(report, None if out is None else Path(out), budgets)


def bench(model: Any, artifacts: list[str | Path], data: str | Path | DataSet | None = None, *,
          runs: int = 60, warmup: int = 5, rounds: int = 3, batch_axes: dict[str, int] | None = None) -> dict[str, Any]:
    """Time ``artifacts`` against ``model`` in float (onnxruntime) and against the first artifact, interleaved.

    Each artifact runs in its own runtime (onnxruntime, LiteRT); without ``data`` a seeded
    normal sample of the inputs' declared shapes is fed.
    """
    from irq.frontends import import_model
    from irq.verify.bench import BenchOptions, synthetic_feed
    from irq.verify.bench import bench as run_bench

    float_model = import_model(model)
    dataset = synthetic_feed(float_model.graph) if data is None else \
        conform(load_data(data), float_model.graph, "bench", batch_axes)
    runners = []
    for artifact in map(Path, artifacts):
        if not artifact.exists():
            raise InputError(f"{artifact}: artifact not found")
        runners.append((str(artifact), get_backend(backend_for(artifact)).runner(artifact, float_model)))
    return run_bench(float_model, runners, dataset, BenchOptions(runs, warmup, rounds))
