"""The verification part of the report: accuracy, error, latency, crash test and budgets.

``verification_section`` compares an artifact with float on the evaluation data (what every
caller needs). ``extended_checks`` adds what ``irq compile --eval`` and ``irq verify`` report
beyond that: latency against the right float baseline, the crash test and per-layer SQNR.
``finalize`` checks the budgets, writes report.json and report.html, then raises BudgetError
when a budget was missed, so a CI gets the files and the exit code.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from irq.backends.base import Backend, Runner
from irq.backends.onnx_qdq import OnnxRunner
from irq.data import DataSet
from irq.errors import DataError
from irq.ir.model import QModel
from irq.report.model import Report
from irq.verify.gates import Budgets
from irq.verify.run import (
    check_labels,
    compare,
    interleaved_latency,
    is_classifier,
    latency,
    run_dataset,
    scored_output,
)

#: A class whose top-1 accuracy falls by more than this many points is reported as collapsed.
COLLAPSE_PT = 10.0
#: Below this speed-up the artifact is reported as no faster than float (timing noise is a few %).
NOT_FASTER = 1.05

DEVICE_LATENCY = {
    "measured": False,
    "why": "Core ML predicts only on Apple hardware; off macOS irq runs the package with its read-back "
           "evaluator (numpy), whose speed says nothing about a device",
    "how": [
        "Xcode 15+: open the .mlpackage, Performance tab, '+' to add a connected device, Run Test: median "
        "prediction time and the compute unit (CPU/GPU/Neural Engine) of every op",
        "xcrun coremlcompiler compile model.mlpackage build/  (or xcrun coremlc) to get the .mlmodelc an app loads",
        "Instruments, 'Core ML' template, on the device running an app that loads the model: load, prediction "
        "and per-op times",
    ],
}


@dataclass(frozen=True)
class VerifyOptions:
    """Which of the extended checks run, and how latency is measured."""

    measure_latency: bool = True
    crash_test: bool = True
    layer_error: bool = True
    latency_runs: int = 30
    warmup: int = 5
    threads: int | None = None  # onnxruntime threads (None: the machine's cores; LiteRT uses its own 2)
    layer_samples: int = 64


def float_reference(float_model: QModel | bytes) -> Runner:
    """What the artifact is compared with: the user's original .tflite in LiteRT, else the float ONNX."""
    if isinstance(float_model, QModel):
        source = float_model.analysis.source
        if source is not None and source.format == "tflite":
            from irq.frontends.tflite_model import TFLiteReference

            graph = float_model.graph
            return TFLiteReference(source.path, [v.name or "" for v in graph.inputs if v.const_value is None],
                                   [v.name or "" for v in graph.outputs])  # type: ignore[return-value]
        float_model = float_model.to_bytes()
    return OnnxRunner(float_model)


def verify_against_float(report: Report, float_model: QModel | bytes, runner: Runner, data: DataSet,
                         measure_latency: bool = True, output: str | None = None) -> None:
    """Run float (its reference runtime) and the artifact (its own) on ``data``; fill ``report``'s figures.

    ``output`` names the output accuracy and agreement read (default: the first that fits the
    labels as class scores; with no such output, only error figures).
    """
    float_runner = float_reference(float_model)
    ref = run_dataset(float_runner, data)
    names = list(float_runner.output_names)
    scored = scored_output(ref, names, data.labels, output)
    if scored is None and data.labels is not None:
        first = next((i for i, r in enumerate(ref) if is_classifier(r)), None)
        if first is not None:  # the one class-score output: say what is wrong with the labels
            check_labels(data, ref[first].shape[1])
        raise DataError(f"{data.source}: the data has labels but no output of the model fits them as class scores "
                        f"(outputs: {', '.join(f'{n} {tuple(r.shape)}' for n, r in zip(names, ref, strict=True))}); "
                        "name one with --output")
    out = run_dataset(runner, data)
    report.warn(*repeat_warnings(runner, data, out, names))
    v = compare(ref, out, data.labels, names, scored)
    report.samples, report.float_reference = len(data), float_runner.runtime
    report.accuracy, report.agreement, report.error = v.pop("accuracy", None), v.pop("agreement", None), \
        v.pop("error", None)
    report.verification = v
    report.warn(*_collapsed_classes(v.get("per_class_worst", []), report.accuracy))
    if measure_latency and runner.runtime == "coreml-readback":
        report.latency_on_device = DEVICE_LATENCY
    elif measure_latency:
        f, a = latency(float_runner, data), latency(runner, data)
        report.latency = {"float": f, "artifact": a, "speedup": f["median_ms"] / max(a["median_ms"], 1e-9),
                          "float_runtime": float_runner.runtime, "artifact_runtime": runner.runtime,
                          "baseline": "onnxruntime, the float model"}
        report.warn(*speed_warnings(report.latency))


#: Samples run a second time to check that the artifact's runtime answers the same twice.
REPEAT_SAMPLES = 8


def repeat_warnings(runner: Runner, data: DataSet, out: list[np.ndarray], names: list[str]) -> list[str]:
    """A warning when the first samples, run again, give other outputs (a runtime reading stale memory).

    Found on a real int8 artifact: onnxruntime's fused kernels with memory patterns answered the
    same input differently from run to run, so every figure measured on it moved between runs.
    """
    k = min(REPEAT_SAMPLES, len(data))
    again = run_dataset(runner, data.head(k))
    worst: tuple[float, str] = (0.0, "")
    for name, first, second in zip(names, out, again, strict=False):
        a, b = np.asarray(first[:k], np.float64), np.asarray(second, np.float64)
        if a.shape != b.shape:
            continue
        diff = float(np.max(np.abs(a - b), initial=0.0))
        scale = float(np.max(np.abs(a), initial=0.0)) or 1.0
        if diff > 1e-4 * scale and diff > worst[0]:
            worst = (diff, name)
    if not worst[1]:
        return []
    return [f"nondeterministic: the {runner.runtime} artifact gave other outputs for the same input on a second run "
            f"(max |difference| {worst[0]:.3g} on output {worst[1]!r}); figures measured on it vary between runs"]


def _collapsed_classes(rows: list[dict[str, Any]], accuracy: dict[str, Any] | None) -> list[str]:
    """Mark (and warn about) classes whose accuracy fell more than COLLAPSE_PT points."""
    mean = f" while the mean fell {accuracy['drop_top1_pt']:.2f} pt" if accuracy else ""
    warnings = []
    for r in rows:
        r["drop_pt"] = 100 * r["drop"]
        r["collapsed"] = r["drop_pt"] > COLLAPSE_PT
        if r["collapsed"]:
            warnings.append(f"class-collapse: class {r['class']} top-1 fell {r['drop_pt']:.1f} pt "
                            f"({100 * r['float']:.1f}% -> {100 * r['artifact']:.1f}%, {r['samples']} samples){mean}")
    return warnings


def speed_warnings(lat: dict[str, Any]) -> list[str]:
    """The honest-speed warning when the artifact is not faster than its float baseline here."""
    s, a, f = lat["speedup"], lat["artifact"]["median_ms"], lat["float"]["median_ms"]
    base = lat.get("baseline", "float")
    if s < 0.99:
        return [f"honest-speed: the artifact is {1 / s:.2f}x SLOWER than float on this machine "
                f"({a:.3f} ms vs {f:.3f} ms, baseline: {base})"]
    if s < NOT_FASTER:
        return [f"honest-speed: the artifact is NOT FASTER than float on this machine ({s:.2f}x: "
                f"{a:.3f} ms vs {f:.3f} ms, baseline: {base})"]
    return []


#: Builds a runner on the float model lowered for the named target, or says why it could not.
BaselineBuilder = Callable[[str, Path], "Runner | str"]


def latency_section(float_model: QModel, artifact: Path, backend: Backend, runner: Runner, data: DataSet,
                    options: VerifyOptions, baseline: BaselineBuilder | None = None) -> dict[str, Any]:
    """Float vs artifact latency, taking turns, against the float model in the artifact's runtime.

    When the backend names a float baseline target (a quantized .tflite: tflite-fp32), the
    driver's ``baseline`` builds it here and onnxruntime's float becomes a second baseline;
    otherwise the artifact is timed against the float model in onnxruntime.
    """
    threads = backend.latency_threads or options.threads or os.cpu_count() or 1
    ort_float = OnnxRunner(float_model.to_bytes(), threads=threads)
    art = backend.latency_runner(Path(artifact), float_model, threads)
    base_target = backend.latency_baseline(Path(artifact))
    if base_target is None or baseline is None:
        f, a = interleaved_latency([ort_float, art], data, options.latency_runs, options.warmup)
        return _latency_dict(f, a, "onnxruntime", art.runtime, "onnxruntime fp32, the float model", threads)
    with tempfile.TemporaryDirectory(prefix="irq-baseline-") as tmp:
        fp32 = baseline(base_target, Path(tmp))
        if isinstance(fp32, str):  # could not build: fall back, and say so
            f, a = interleaved_latency([ort_float, art], data, options.latency_runs, options.warmup)
            return _latency_dict(f, a, "onnxruntime", art.runtime,
                                 f"onnxruntime fp32 (no {base_target} baseline: {fp32})", threads)
        f, o, a = interleaved_latency([fp32, ort_float, art], data, options.latency_runs, options.warmup)
    section = _latency_dict(f, a, fp32.runtime, art.runtime,
                            f"{fp32.runtime}: the {base_target} lowering of the same model, built for this measurement",
                            threads)
    section["other_baselines"] = {"onnxruntime-fp32": {**o, "speedup": o["median_ms"] / max(a["median_ms"], 1e-9)}}
    return section


def _latency_dict(f: dict[str, float], a: dict[str, float], f_rt: str, a_rt: str, baseline: str,
                  threads: int) -> dict[str, Any]:
    return {"float": f, "artifact": a, "speedup": f["median_ms"] / max(a["median_ms"], 1e-9), "float_runtime": f_rt,
            "artifact_runtime": a_rt, "baseline": baseline, "threads": threads, "batch": 1}


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def extended_checks(report: Report, float_model: QModel, artifact: Path, backend: Backend, runner: Runner,
                    data: DataSet, options: VerifyOptions | None = None,
                    baseline: BaselineBuilder | None = None) -> None:
    """Add latency (right baseline), crash test and per-layer SQNR to ``report``, with warnings.

    What applies is the backend's to say (host latency, per-layer error, a float baseline in its
    own runtime); ``baseline`` is how the driver lowers the float model for that baseline.
    """
    options = options or VerifyOptions()
    if options.measure_latency and not backend.host_latency:
        report.latency, report.latency_on_device = None, DEVICE_LATENCY
    elif options.measure_latency:
        report.latency = latency_section(float_model, Path(artifact), backend, runner, data, options, baseline)
        report.warnings[:] = [w for w in report.warnings if not w.startswith("honest-speed")]
        report.warn(*speed_warnings(report.latency))
    if options.crash_test:
        from irq.verify.crashtest import crash_test

        try:
            report.crash_test = crash_test(Path(artifact), backend.name, float_model.to_bytes(), data)
        except Exception as e:  # the cases could not even be built: say so, do not drop the section
            report.crash_test = [{"case": "setup", "passed": False, "outcome": "error",
                                  "detail": f"not run: {_first_line(e)}"}]
        report.warn(*(f"crash-test: {r['case']}: {r['detail']}" for r in report.crash_test if not r["passed"]))
    if options.layer_error and backend.per_layer_error:
        from irq.verify.layer_error import layer_sqnr

        try:
            report.layer_error = layer_sqnr(float_model.to_bytes(), Path(artifact), data, options.layer_samples)
        except Exception as e:  # a diagnostic: its failure is reported, it does not stop verification
            why = f"not computed: {_first_line(e)}"
            report.layer_error = {"samples": 0, "layers": [], "note": why}
            report.warn(f"layer-error: per-layer SQNR {why}")
    elif options.layer_error:
        report.layer_error = {"samples": 0, "layers": [], "note": "per-layer SQNR is computed for ONNX "
                              f"artifacts only (this one is {backend.name})"}


def finalize(report: Report, json_path: Path | None, budgets: Budgets | None = None) -> dict[str, Any]:
    """Check budgets, write report.json and report.html beside it, then raise BudgetError if one was missed.

    Returns what report.json holds (the report the Python API hands back).
    """
    from irq.report.build import write_report
    from irq.verify import gates as budget_checks

    report.budgets = budget_checks.section(report.to_dict(), budgets)
    content = report.to_dict()
    where = "(not saved: no output path)"
    if json_path is not None:
        from irq.report.html import write_html

        write_report(json_path, content)
        write_html(json_path.with_suffix(".html"), content)
        where = str(json_path)
    budget_checks.enforce(content, where)
    return content
