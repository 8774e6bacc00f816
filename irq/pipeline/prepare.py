"""The prepare stage: the inputs a target needs fixed, frozen inputs folded, the pass pipeline run.

Every entry point (compile, the budget search's candidates, batch, QAT) prepares a model through
these functions, so what they decide about shapes and frozen inputs folds before any other pass
(and the backend) sees the graph.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Protocol

from irq.data import DataSet
from irq.errors import InputError
from irq.ir.model import QModel
from irq.pipeline import input_plan as shape_plan
from irq.pipeline.infra import Instrument, Pass, PassManager
from irq.pipeline.input_plan import InputShape
from irq.pipeline.recipe import Recipe
from irq.pipeline.registry import parse_pipeline
from irq.pipeline.targets import Target, get_backend


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


class CalibrationCache(Protocol):
    """Where calibration results can be kept between compiles (``irq batch`` keeps them in its store)."""

    def calibrate(self, qmodel: QModel, calibrate: Pass, run: Callable[[QModel], QModel]) -> QModel:
        """``qmodel`` with ``calibrate``'s results: from the cache, or by ``run`` (and then kept)."""


def calibration_index(passes: Sequence[Pass]) -> int | None:
    """Where the pass that calibrates ranges is in ``passes`` (None: there is none).

    Other passes read the calibration data too (equalize, smooth-quant, bias-correct), but they
    rewrite the graph: only calibrate's results are ranges that a cache can keep.
    """
    return next((i for i, p in enumerate(passes) if p.name == "calibrate"), None)


def reads_calibration(passes: Sequence[Pass]) -> bool:
    """Whether any pass in ``passes`` reads the calibration data."""
    return any(p.reads_calibration_data for p in passes)


def plan_index(passes: Sequence[Pass]) -> int | None:
    """Where the precision plan is made in ``passes`` (None: the pipeline does not quantize)."""
    from irq.passes.plan_precision import PlanPrecision

    return next((i for i, p in enumerate(passes) if isinstance(p, PlanPrecision)), None)


def target_passes(target: Target, pipeline: str | None = None, recipe: Recipe | None = None,
                  prefix: str = "") -> list[Pass]:
    """The passes ``target`` runs (or ``pipeline``), a recipe's calibration percentile applied."""
    passes = parse_pipeline(",".join(p for p in (prefix, pipeline or target.pipeline) if p))
    at = calibration_index(passes)
    if recipe and recipe.percentile is not None and at is not None and hasattr(passes[at], "percentile"):
        passes[at] = dataclasses.replace(passes[at], percentile=recipe.percentile)  # type: ignore[call-arg]
    return passes


def quantize(qmodel: QModel, target: Target, calib: DataSet | None = None, recipe: Recipe | None = None,
             pipeline: str | None = None, instruments: Sequence[Instrument] = (),
             shapes: dict[str, InputShape] | None = None, frozen: dict[str, float] | None = None,
             calibration_cache: CalibrationCache | None = None) -> QModel:
    """Run ``target``'s pipeline (or ``pipeline``) over a copy of ``qmodel`` and return it.

    ``frozen`` inputs become constants and ``shapes`` (from :func:`fixed_shapes`) are fixed
    first, so what they decide folds before any other pass (and the backend) sees it. With a
    ``calibration_cache``, calibration results come from it when it has them.
    """
    if calib is not None and frozen:
        calib = calib.without(set(frozen))
    work = qmodel.clone()
    scheme = recipe.apply_to(target.scheme) if recipe else target.scheme
    work = dataclasses.replace(work, scheme=scheme, recipe=recipe, default_precision=target.default_precision,
                               calibration=calib)
    passes = target_passes(target, pipeline, recipe, shape_plan.pass_spec(shapes or {}, frozen))
    at = calibration_index(passes)
    if target.needs_calibration and calib is None and reads_calibration(passes):
        raise InputError(f"target {target.name} needs calibration data (--calib)")
    if calibration_cache is None or calib is None or at is None:
        return PassManager(passes, instruments)(work).model
    work = PassManager(passes[:at], instruments)(work).model
    if all(i.should_run(passes[at], work) for i in instruments):
        work = calibration_cache.calibrate(work, passes[at], lambda m: PassManager([passes[at]], instruments)(m).model)
    return PassManager(passes[at + 1:], instruments)(work).model


def prepare_inputs(float_model: QModel, shapes: dict[str, InputShape], frozen: dict[str, float] | None,
                   instruments: Sequence[Instrument] = ()) -> QModel:
    """``float_model`` with ``frozen`` inputs made constants and ``shapes`` fixed, folded (a copy).

    Every later stage starts from this model: the pass pipeline, the budget search's candidates,
    and the analyses that compare the artifact layer by layer with float.
    """
    spec = shape_plan.pass_spec(shapes, frozen)
    if not spec:
        return float_model
    return PassManager(parse_pipeline(spec), instruments)(float_model.clone()).model
