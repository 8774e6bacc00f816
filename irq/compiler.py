"""The compile driver: import -> pass pipeline -> backend -> verification -> report.

``compile`` is the Python API behind ``irq compile``; it returns the report as a dict and
writes the artifact and ``report.json`` under ``out_dir``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from irq.backends.base import Artifact, Runner
from irq.data import DataSet, load_data
from irq.data.conform import conform
from irq.errors import InputError, IrqError
from irq.frontends import import_model
from irq.ir.model import QModel
from irq.pipeline import input_plan as shape_plan
from irq.pipeline.infra import DisablePassesInstrument, DumpIRInstrument, Instrument, TimingInstrument
from irq.pipeline.prepare import fixed_shapes, prepare_inputs, quantize
from irq.pipeline.presets import with_preset, with_weights
from irq.pipeline.recipe import Recipe, load_recipe
from irq.pipeline.targets import Target, get_backend, get_target
from irq.report.model import Report
from irq.verify.checks import BaselineBuilder, VerifyOptions
from irq.verify.gates import Budgets

if TYPE_CHECKING:
    from irq.sensitivity.metrics import Criterion
    from irq.sensitivity.mixed import SearchOptions, SearchResult


def _data(spec: str | Path | DataSet | None, qmodel: QModel, role: str,
          batch_axes: dict[str, int] | None = None) -> DataSet | None:
    if spec is None:
        return None
    return conform(load_data(spec), qmodel.graph, role, batch_axes)


def compile(model: str | Path | QModel | onnx.ModelProto, target: str | Target, out_dir: str | Path, *,
            calib: str | Path | DataSet | None = None, eval: str | Path | DataSet | None = None,
            recipe: str | Path | Recipe | None = None, pipeline: str | None = None,
            dump_ir: str | Path | None = None, disable_passes: Sequence[str] = (),
            options: dict[str, Any] | None = None, measure_latency: bool = True,
            budgets: Budgets | None = None, checks: VerifyOptions | None = None,
            input_shapes: dict[str, tuple[int, ...]] | None = None, input_values: dict[str, float] | None = None,
            batch_axes: dict[str, int] | None = None, output: str | None = None,
            criterion: Criterion | None = None, search: SearchOptions | None = None,
            verify_each: bool = False, preset: str | None = None, weights: str | None = None) -> dict[str, Any]:
    """Compile ``model`` for ``target``; write the artifact, report.json and report.html; return the report.

    With ``eval``, the artifact is verified (accuracy, error, latency, crash test, per-layer
    SQNR; ``checks`` selects). A missed budget raises BudgetError after everything is written.
    ``input_shapes`` fixes inputs' shapes (a static-shape target takes the rest from the data);
    ``input_values`` freezes scalar inputs into constants (the data must hold those values);
    ``batch_axes`` says where an input's batch is when not on axis 0; ``output`` names the output
    that accuracy, agreement and budgets read. With ``criterion`` (an accuracy budget), the
    fewest layers are kept in higher precision to meet it (``search`` tunes the search); the
    report gains a ``mixed_precision`` section. ``verify_each`` checks the IR after every pass
    (onnx's checker, irq's invariants, each pass's ``ensures``). ``preset`` (fast, accurate)
    adds accuracy passes to the target's pipeline; ``weights="int4"`` stores int4 weights.
    """
    t0 = time.perf_counter()
    tgt = with_weights(with_preset(target if isinstance(target, Target) else get_target(target), preset), weights)
    if options:
        tgt = dataclasses.replace(tgt, options={**tgt.options, **options})
    out = _prepare_out_dir(out_dir, model)
    float_model = import_model(model)
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
    if verify_each:
        from irq.pipeline.verify_each import VerifyEachInstrument

        instruments.append(VerifyEachInstrument())
    stage = Stages(float_model, prepare_inputs(float_model, shapes, input_values, instruments), tgt, out,
                   _without(calib_data, input_values), _without(eval_data, input_values), eval_data)
    if criterion is not None and output is not None:
        criterion = dataclasses.replace(criterion, output=_output_index(float_model, output))
    stage.lower(rec, pipeline, instruments, criterion, search)
    report = stage.report(timing.timings, output, checks or VerifyOptions(measure_latency=measure_latency))
    if shapes:
        report.input_shapes = shape_plan.report_section(shapes)
    if input_values:
        report.frozen_inputs = dict(input_values)
    return stage.finish(report, t0, budgets, rec, criterion)


def _without(data: DataSet | None, frozen: dict[str, float] | None) -> DataSet | None:
    return data.without(set(frozen)) if data is not None and frozen else data


def _output_index(float_model: QModel, output: str) -> int:
    names = [v.name for v in float_model.graph.outputs]
    if output not in names:
        raise InputError(f"--output {output!r} is not an output of the model (outputs: {', '.join(map(str, names))})")
    return names.index(output)


@dataclasses.dataclass
class Stages:
    """One compile's state between its stages: lower (or search), verify, report, write.

    ``compile`` runs them all; batch jobs and QAT lower in their own way (a cached calibration,
    trained weights) and hand the lowered model to :meth:`lowered`, so every entry point's
    report carries the same verification.
    """

    float_model: QModel
    prepared: QModel  # inputs frozen and fixed: what the passes and the analyses start from
    target: Target
    out: Path
    calib: DataSet | None
    eval: DataSet | None  # for the prepared model (frozen inputs dropped)
    eval_full: DataSet | None  # for the float model as the user gave it
    qmodel: QModel | None = None
    artifact: Artifact | None = None
    search: SearchResult | None = None

    @classmethod
    def lowered(cls, float_model: QModel, qmodel: QModel, artifact: Artifact, target: Target,
                evaluation: DataSet | None) -> Stages:
        """The stages after a lowering done elsewhere (inputs neither frozen nor fixed)."""
        return cls(float_model, float_model, target, artifact.path.parent, None, evaluation, evaluation, qmodel,
                   artifact)

    def lower(self, rec: Recipe | None, pipeline: str | None, instruments: Sequence[Instrument],
              criterion: Criterion | None, search: SearchOptions | None) -> None:
        """Quantize and lower, or (under a budget) search for the assignment to lower."""
        if criterion is None:
            self.qmodel = quantize(self.prepared, self.target, self.calib, rec, pipeline, instruments)
            self.artifact = get_backend(self.target.backend).lower(self.qmodel, self.target, self.out)
            return
        from irq.sensitivity.budget import search_stage

        self.search, self.artifact = search_stage(self.prepared, self.target, self.calib, self.eval, criterion,
                                                  search, rec, pipeline, self.out)
        self.qmodel = self.search.qmodel

    def report(self, timings: list[tuple[str, float]], output: str | None, checks: VerifyOptions) -> Report:
        """The report: what was built, then (with evaluation data) how it answers."""
        from irq.report.build import build_report
        from irq.verify.checks import extended_checks, verify_against_float

        assert self.qmodel is not None and self.artifact is not None
        report = build_report(self.float_model, self.float_model.to_bytes(), self.qmodel, self.target,
                              self.artifact, timings)
        if self.eval_full is not None and self.eval is not None:
            runner = get_backend(self.target.backend).runner(self.artifact.path, self.qmodel)
            verify_against_float(report, self.float_model, runner, self.eval_full, measure_latency=False,
                                 output=output)
            extended_checks(report, self.prepared, self.artifact.path, get_backend(self.target.backend), runner,
                            self.eval, checks, float_baseline(self.prepared))
        return report

    def finish(self, report: Report, t0: float, budgets: Budgets | None, rec: Recipe | None,
               criterion: Criterion | None) -> dict[str, Any]:
        """Add the search's section, write report.json/html; raise BudgetError for a missed budget."""
        from irq.verify.checks import finalize

        if self.search is not None and criterion is not None:
            from irq.sensitivity.budget import add_budget_section, missed

            add_budget_section(report, self.search, rec, self.target, self.out, criterion)
        report.wall_seconds = round(time.perf_counter() - t0, 3)
        content = finalize(report, self.out / "report.json", budgets)
        if self.search is not None and criterion is not None and not self.search.met:
            raise missed(self.search, self.float_model.name, self.target, criterion, self.out)
        return content


def float_baseline(float_model: QModel) -> BaselineBuilder:
    """How verification gets the float model lowered for a target (a latency baseline in its runtime)."""
    def build(target_name: str, out: Path) -> Runner | str:
        target = get_target(target_name)
        try:
            qmodel = quantize(float_model, target)
            backend = get_backend(target.backend)
            return backend.runner(backend.lower(qmodel, target, out).path, qmodel)
        except IrqError as e:
            return str(e).splitlines()[0]
    return build


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
