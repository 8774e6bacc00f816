"""The compile driver: import -> pass pipeline -> backend -> verification -> report.

``compile`` is the Python API behind ``irq compile``; it returns the report as a dict and
writes the artifact and ``report.json`` under ``out_dir``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from irq import input_plan as shape_plan
from irq.budgets import Budgets
from irq.data import DataSet, load_data
from irq.data_check import conform
from irq.errors import InputError
from irq.input_plan import InputShape
from irq.ir import QModel
from irq.pass_infra import DisablePassesInstrument, DumpIRInstrument, Instrument, PassManager, TimingInstrument
from irq.recipe import Recipe, load_recipe
from irq.registry import parse_pipeline
from irq.targets import Target, get_backend, get_target

if TYPE_CHECKING:
    from irq.verify_report import VerifyOptions


def import_model(spec: str | Path | QModel | onnx.ModelProto) -> QModel:
    """Load a model from an ONNX path, a zoo name or ``package.module:function``."""
    from irq.frontends.onnx_file import from_proto, load_onnx

    if isinstance(spec, QModel):
        return spec.clone()
    if isinstance(spec, onnx.ModelProto):
        return from_proto(spec, spec.graph.name or "model")
    text = str(spec)
    if text.endswith(".tflite"):
        from irq.frontends.tflite_model import load_tflite

        return load_tflite(text)
    if text.endswith((".keras", ".h5", ".hdf5")):
        from irq.frontends.keras_model import load_keras

        return load_keras(text)
    if text.endswith(".onnx") or os.sep in text or Path(text).exists():
        return load_onnx(text)
    if ":" in text:
        from irq.frontends.torch_module import load_callable

        return load_callable(text)
    from irq import zoo

    return load_onnx(zoo.get(text).onnx_path)


def _data(spec: str | Path | DataSet | None, qmodel: QModel, role: str,
          batch_axes: dict[str, int] | None = None) -> DataSet | None:
    if spec is None:
        return None
    return conform(load_data(spec), qmodel.graph, role, batch_axes)


def fixed_shapes(float_model: QModel, target: Target, given: dict[str, tuple[int, ...]] | None,
                 calib: DataSet | None, evaluation: DataSet | None,
                 frozen: dict[str, float] | None = None) -> dict[str, InputShape]:
    """The input shapes to fix for ``target`` (asks the backend whether it needs static shapes).

    Frozen inputs are checked against the data here and get no shape.
    """
    data = [("calibration", calib), ("evaluation", evaluation)]
    if frozen:
        shape_plan.check_frozen(float_model.graph, frozen, data)
    static = get_backend(target.backend).needs_static_shapes
    return shape_plan.resolve(float_model.graph, given, data, static, frozenset(frozen or {}))


def quantize(qmodel: QModel, target: Target, calib: DataSet | None = None, recipe: Recipe | None = None,
             pipeline: str | None = None, instruments: Sequence[Instrument] = (),
             shapes: dict[str, InputShape] | None = None, frozen: dict[str, float] | None = None) -> QModel:
    """Run ``target``'s pipeline (or ``pipeline``) over a copy of ``qmodel`` and return it.

    ``frozen`` inputs become constants and ``shapes`` (from :func:`fixed_shapes`) are fixed
    first, so what they decide folds before any other pass (and the backend) sees it.
    """
    if calib is not None and frozen:
        calib = calib.without(set(frozen))
    work = qmodel.clone()
    scheme = recipe.apply_to(target.scheme) if recipe else target.scheme
    work = dataclasses.replace(work, scheme=scheme, recipe=recipe, default_precision=target.default_precision,
                               calibration=calib)
    fix = shape_plan.pass_spec(shapes or {}, frozen)
    passes = parse_pipeline(",".join(p for p in (fix, pipeline or target.pipeline) if p))
    if recipe and recipe.percentile is not None:
        passes = [dataclasses.replace(p, percentile=recipe.percentile)  # type: ignore[call-arg]
                  if p.name == "calibrate" else p
                  for p in passes]
    if target.needs_calibration and calib is None and any(p.name == "calibrate" for p in passes):
        raise InputError(f"target {target.name} needs calibration data (--calib)")
    return PassManager(passes, instruments)(work).model


def compile(model: str | Path | QModel | onnx.ModelProto, target: str, out_dir: str | Path, *,
            calib: str | Path | DataSet | None = None, eval: str | Path | DataSet | None = None,
            recipe: str | Path | Recipe | None = None, pipeline: str | None = None,
            dump_ir: str | Path | None = None, disable_passes: Sequence[str] = (),
            options: dict[str, Any] | None = None, measure_latency: bool = True,
            budgets: Budgets | None = None, checks: VerifyOptions | None = None,
            input_shapes: dict[str, tuple[int, ...]] | None = None, input_values: dict[str, float] | None = None,
            batch_axes: dict[str, int] | None = None, output: str | None = None) -> dict[str, Any]:
    """Compile ``model`` for ``target``; write the artifact, report.json and report.html; return the report.

    With ``eval``, the artifact is verified (accuracy, error, latency, crash test, per-layer
    SQNR; ``checks`` selects). A missed budget raises BudgetError after everything is written.
    ``input_shapes`` fixes inputs' shapes (a static-shape target takes the rest from the data);
    ``input_values`` freezes scalar inputs into constants (the data must hold those values);
    ``batch_axes`` says where an input's batch is when not on axis 0; ``output`` names the output
    that accuracy, agreement and budgets read.
    """
    from irq.report import build_report
    from irq.verify_report import VerifyOptions, extended_checks, finalize, verification_section

    t0 = time.perf_counter()
    tgt = get_target(target)
    if options:
        tgt = dataclasses.replace(tgt, options={**tgt.options, **options})
    out = _prepare_out_dir(out_dir, model)
    float_model = import_model(model)
    float_bytes = float_model.to_bytes()
    calib_data = _data(calib, float_model, "calibration", batch_axes)
    eval_data = _data(eval, float_model, "evaluation", batch_axes)
    shapes = fixed_shapes(float_model, tgt, input_shapes, calib_data, eval_data, input_values)
    rec = load_recipe(recipe) if isinstance(recipe, str | Path) else recipe
    timing = TimingInstrument()
    instruments: list[Instrument] = [timing]
    if disable_passes:
        instruments.append(DisablePassesInstrument(frozenset(disable_passes)))
    if dump_ir:
        instruments.append(DumpIRInstrument(Path(dump_ir)))
    qmodel = quantize(float_model, tgt, calib_data, rec, pipeline, instruments, shapes, input_values)
    backend = get_backend(tgt.backend)
    artifact = backend.lower(qmodel, tgt, out)
    report = build_report(float_model, float_bytes, qmodel, tgt, artifact, timing.timings)
    if shapes:
        report["input_shapes"] = shape_plan.report_section(shapes)
    if input_values:
        report["frozen_inputs"] = dict(input_values)
    if eval_data is not None:
        runner = backend.runner(artifact.path, qmodel)
        report.update(verification_section(float_model, runner, eval_data, measure_latency=False, output=output))
        extended_checks(report, float_model, artifact.path, tgt.backend, runner, eval_data,
                        checks or VerifyOptions(measure_latency=measure_latency))
    report["wall_seconds"] = round(time.perf_counter() - t0, 3)
    finalize(report, out / "report.json", budgets)
    return report


#: Every file a compile may write into its output folder.
OUTPUT_FILES = ("model.onnx", "model.tflite", "model.tflite.json", "model.mlpackage", "report.json", "report.html",
                "mixed_recipe.yaml")


def _prepare_out_dir(out_dir: str | Path, model: object = None) -> Path:
    """Create and probe the output folder; refuse one where an output would replace the input model."""
    out = Path(out_dir)
    if isinstance(model, str | Path) and Path(model).exists():
        source = Path(model).resolve()
        clash = [name for name in OUTPUT_FILES if (out / name).resolve() == source]
        if clash:
            raise InputError(f"{model}: writing {out / clash[0]} would overwrite the input model; "
                             "choose another output folder (-o)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".irq-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise InputError(f"{out}: output folder is not writable ({e.strerror})") from e
    return out
