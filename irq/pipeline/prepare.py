"""The prepare stage: the inputs a target needs fixed, frozen inputs folded, the pass pipeline run.

Every entry point (compile, the budget search's candidates, batch, QAT) prepares a model through
these functions, so what they decide about shapes and frozen inputs folds before any other pass
(and the backend) sees the graph.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from irq.data import DataSet
from irq.errors import InputError
from irq.ir.model import QModel
from irq.pipeline import input_plan as shape_plan
from irq.pipeline.infra import Instrument, PassManager
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
