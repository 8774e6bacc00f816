"""Candidate models from ONE calibration, evaluated in parallel worker processes.

The target's pipeline is cut after ``plan-precision``: the prefix (clean-up, analysis,
calibration, planning) runs once; each candidate is a clone of that planned IR whose plan has
some layers pinned to another precision, finished by the suffix (normally ``insert-qdq``).
Workers receive the planned model once, read the data batch by batch from uncompressed ``.npz``
files and run onnxruntime with one intra-op thread each, so two workers use two cores without
contention.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import onnx
import onnx_ir as ir

from irq.data import DataSet, StoredData
from irq.errors import InputError
from irq.ir.model import QModel, node_label
from irq.pipeline.infra import Instrument, PassManager
from irq.pipeline.registry import format_pipeline, parse_pipeline
from irq.pipeline.targets import Target
from irq.quant.spec import DecisionSource, Granularity, LayerDecision, Precision
from irq.sensitivity.boundaries import settle


def split_pipeline(target: Target, pipeline: str | None = None) -> tuple[str, str]:
    """The pipeline up to and including ``plan-precision``, and the rest."""
    from irq.pipeline.prepare import plan_index

    passes = parse_pipeline(pipeline or target.pipeline)
    at = plan_index(passes)
    if at is None:
        raise InputError(f"target {target.name} has no precision plan (no plan-precision in its pipeline "
                         f"{format_pipeline(passes)!r}): sensitivity needs a quantizing target")
    # measurements right after the plan (bias-correct) belong to the one shared calibration
    while at + 1 < len(passes) and not passes[at + 1].rewrites_graph:
        at += 1
    return format_pipeline(passes[:at + 1]), format_pipeline(passes[at + 1:])


def proxy_suffix(suffix: str) -> str:
    """The suffix that builds an onnxruntime-runnable twin of a candidate.

    TFLite's pipelines stop at the plan (its converter quantizes); their QDQ twin, with the
    target's scheme, is what the layers are ranked on before the search measures real artifacts.
    """
    return suffix or "insert-qdq"


def calibrate_once(float_qmodel: QModel, target: Target, calib: DataSet | None, recipe: Any = None,
                   pipeline: str | None = None, instruments: Sequence[Instrument] = ()) -> QModel:
    """Run the target's pipeline up to the precision plan: the one calibration every candidate shares."""
    from irq.pipeline.prepare import quantize

    prefix, _ = split_pipeline(target, pipeline)
    return quantize(float_qmodel, target, calib, recipe, prefix, instruments)


def pin(base: QModel, overrides: Mapping[str, Precision], suffix: str, reason: str = "sensitivity",
        isolate: bool = True) -> QModel:
    """A clone of the planned ``base`` with ``overrides`` pinned in its plan, finished by ``suffix``.

    Activations and (with ``isolate``) data-movement ops that feed only float layers are kept
    float as well (see ``irq.sensitivity.boundaries``); scoring a layer quantized alone turns
    ``isolate`` off.
    """
    work = base.clone(share_tensors=True)  # the suffixes (insert-qdq, quantize-dynamic...) add tensors, never write
    for label, precision in overrides.items():
        old = work.plan.get(label)
        work.plan[label] = LayerDecision(precision, reason, old.granularity if old else Granularity.PER_CHANNEL,
                                         source=DecisionSource.SENSITIVITY)
    settle(work, reason, movement=isolate)
    if suffix:
        work = PassManager(parse_pipeline(suffix))(work).model
    return work


@dataclass(frozen=True)
class Workspace:
    """Everything a worker needs, sent once: the planned model, the float model, data paths."""

    base_model: bytes
    base_fields: dict[str, Any]
    float_model: bytes
    suffix: str
    data: dict[str, StoredData]
    threads: int | None = 1

    @staticmethod
    def create(base: QModel, float_model: bytes, suffix: str, data: dict[str, StoredData],
               threads: int | None) -> Workspace:
        """Pack ``base`` without its graph object and calibration data (they do not pickle cheaply)."""
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)
                  if f.name not in ("model", "calibration", "analysis")}
        return Workspace(base.to_bytes(), fields, float_model, suffix, data, threads)

    def base(self) -> QModel:
        """The planned QModel rebuilt from bytes."""
        model = ir.serde.deserialize_model(onnx.load_from_string(self.base_model))
        return QModel(model=model, **self.base_fields)


@dataclass(frozen=True)
class Task:
    """One evaluation: the float model (``overrides`` None) or a candidate, on a named data set.

    With ``layerwise`` set, the result is per-unit error statistics instead of model outputs.
    """

    data: str
    overrides: tuple[tuple[str, str], ...] | None = None
    layerwise: tuple[Any, ...] = ()
    isolate: bool = True
    #: Several candidates (overrides, isolate) run together, each only downstream of where it
    #: differs from ``reference`` (see ``irq.sensitivity.downstream``); the result is a list.
    group: tuple[tuple[tuple[tuple[str, str], ...], bool], ...] = ()
    reference: tuple[tuple[tuple[str, str], ...], bool] = ((), True)


_STATE: dict[str, Any] = {}


def with_integer_weights(base: QModel) -> QModel:
    """``base`` with every planned layer's integer weights chosen once, in place.

    insert-qdq would round each layer again in each of a run's hundred-odd candidates (a
    fifth of a candidate's build on EfficientNet-Lite0); learnt roundings are kept as they are.
    """
    from irq.quant.weight_range import layer_weight, planned_weight

    for node in base.graph:
        label = node_label(node)
        decision = base.plan.get(label)
        if decision is None or not decision.precision.has_qdq_weights or label in base.rounded_weights:
            continue
        found = planned_weight(base, node, label)
        if found is not None:
            _, w, axis, qtype = found
            base.rounded_weights[label], base.weight_scales[label] = layer_weight(base, label, w, axis, qtype)
    return base


def _init(space: Workspace) -> None:
    _STATE.clear()
    _STATE.update(space=space, base=with_integer_weights(space.base()), data={})


def _dataset(name: str) -> DataSet:
    cache = _STATE["data"]
    if name not in cache:
        cache[name] = _STATE["space"].data[name].load()
    return cache[name]


def run_task(task: Task) -> Any:
    """Evaluate one task in this process (a worker, or the caller when there is no pool)."""
    from irq.backends.onnx_qdq import OnnxRunner
    from irq.verify.run import run_dataset

    space: Workspace = _STATE["space"]
    data = _dataset(task.data)
    if task.group:
        return _run_group(task, data)
    if task.overrides is None:
        return run_dataset(OnnxRunner(space.float_model, space.threads), data)
    overrides = {label: Precision(p) for label, p in task.overrides}
    model = pin(_STATE["base"], overrides, space.suffix, isolate=task.isolate)
    if task.layerwise:
        from irq.sensitivity.layerwise import layer_errors

        return layer_errors(_STATE["base"], model, list(task.layerwise), data, space.threads)
    return run_dataset(OnnxRunner(model.to_bytes(), space.threads), data)


def _pinned(key: tuple[tuple[tuple[str, str], ...], bool]) -> QModel:
    overrides, isolate = key
    return pin(_STATE["base"], {label: Precision(p) for label, p in overrides}, _STATE["space"].suffix,
               isolate=isolate)


def _run_group(task: Task, data: DataSet) -> list[list[Any]]:
    """Each candidate of ``task.group`` from one shared reference run per batch, then its own suffix."""
    from irq.sensitivity.downstream import SharedPrefix, SuffixRunner, split, worth_sharing
    from irq.verify.run import run_together

    threads = _STATE["space"].threads
    references = _STATE.setdefault("references", {})
    if task.reference not in references:  # the same reference serves many groups
        references[task.reference] = _pinned(task.reference).to_proto()
    reference = references[task.reference]
    candidates = [_pinned(member).to_proto() for member in task.group]
    suffixes = worth_sharing(candidates, [split(c, reference) for c in candidates])
    del candidates
    prefix = SharedPrefix(reference, suffixes, threads)
    return run_together([SuffixRunner(prefix, s, threads) for s in suffixes], data)


class Evaluator:
    """Runs tasks in ``workers`` spawned processes (or inline when ``workers`` is 1)."""

    def __init__(self, space: Workspace, workers: int) -> None:
        self._pool: ProcessPoolExecutor | None = None
        if workers > 1:
            ctx = multiprocessing.get_context("spawn")  # forking a process that holds ORT threads is unsafe
            self._pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(space,))
        else:
            _init(space)

    def submit(self, task: Task) -> Future:
        """Schedule ``task``; the future holds its outputs (or layer statistics)."""
        if self._pool is not None:
            return self._pool.submit(run_task, task)
        future: Future = Future()
        try:
            future.set_result(run_task(task))
        except Exception as e:  # handed to the caller through the future, as a pool would
            future.set_exception(e)
        return future

    def close(self) -> None:
        """Stop the workers."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        _STATE.clear()

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _key(overrides: Mapping[str, Precision]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v.value) for k, v in overrides.items()))


def as_task(overrides: Mapping[str, Precision], data: str, isolate: bool = True) -> Task:
    """A picklable task for ``overrides`` on data set ``data``."""
    return Task(data, _key(overrides), isolate=isolate)


def as_group(members: Sequence[Mapping[str, Precision]], reference: Mapping[str, Precision], data: str,
             isolate: bool = True) -> Task:
    """One task for several candidates that each differ from ``reference`` in a few layers."""
    return Task(data, group=tuple((_key(m), isolate) for m in members), reference=(_key(reference), isolate))
