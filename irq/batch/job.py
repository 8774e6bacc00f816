"""One batch job (model x target): the function every executor runs, in a worker process.

A job's outputs live in ``OUTDIR/<name>/<target>/``: the artifact, ``report.json`` and a
``.done`` marker holding the job's cache key. The folder is published in one rename, so it is
either complete or absent; a job is done when its marker's key equals the key its inputs hash
to now. The artifact itself is built once into the cache (``jobs/<key>/``) and copied out, so
the same job in another output folder (or after the outputs were deleted) costs a copy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irq.batch.keys import stage_key
from irq.batch.schema import DataRef, JobSpec
from irq.batch.stages import StageLog, calibration_matters, import_stage, load_ref, quantize_cached
from irq.batch.stamps import data_files, data_what, remember, stamp_key
from irq.batch.store import EntryBusy, Store
from irq.data import DataSet
from irq.errors import IrqError
from irq.io import atomic_path
from irq.pipeline.targets import Target, get_target

DONE = ".done"
REPORT = "report.json"


@dataclass(frozen=True)
class Job:
    """A JobSpec with where its outputs and the cache live (what a worker receives)."""

    spec: JobSpec
    out_dir: Path
    cache_dir: Path
    threads: int | None = None  # onnxruntime threads in the worker (None: leave the process as it is)
    may_defer: bool = True  # hand the job back ("deferred") rather than wait for another worker
    retry_failed: bool = False  # run it even when the same inputs and code failed before


@dataclass(frozen=True)
class JobResult:
    """What a worker sends back.

    ``status``: "built" (compiled now), "copied" (the cache had it), "up-to-date" (the outputs were
    already there), "failed" (``error`` holds the one-line message) or "deferred" (another
    worker is computing a stage this job needs: the executor queues the job again, once).
    """

    label: str
    status: str
    key: str = ""
    error: str = ""
    seconds: float = 0.0
    stages: tuple[tuple[str, str], ...] = ()
    node: str = ""  # the Ray node that ran it (empty for the local executors)

    @property
    def ok(self) -> bool:
        """True unless the job failed."""
        return self.status != "failed"


def target_for(spec: JobSpec) -> Target:
    """The job's Target preset with the manifest's backend options applied."""
    target = get_target(spec.target)
    s = spec.settings
    options = {k: v for k, v in (("io", s.io), ("deployment_target", s.deployment_target)) if v}
    return dataclasses.replace(target, options={**target.options, **options}) if options else target


def job_key(spec: JobSpec, model_hash: str, calib_fp: str | None, eval_fp: str | None) -> str:
    """The key of a finished job: everything the artifact and its report depend on."""
    s, target = spec.settings, target_for(spec)
    return stage_key("job", model=model_hash, target=target,
                     calib=calib_fp if calibration_matters(target, s.pipeline) else None, eval=eval_fp,
                     recipe=s.recipe.to_dict() if s.recipe else None, pipeline=s.pipeline,
                     disable_passes=s.disable_passes, latency=s.latency)


def done_key(out_dir: Path) -> str | None:
    """The key of the finished job in ``out_dir``, or None when it is not (completely) there."""
    try:
        marker = json.loads((out_dir / DONE).read_text())
        complete = (out_dir / REPORT).is_file() and (out_dir / marker["artifact"]).exists()
        return marker["key"] if complete else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_job(job: Job) -> JobResult:
    """Run one job to completion; never raises for the job's own errors (they become the result)."""
    start = time.perf_counter()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if job.threads is not None:  # a worker process: its share of the cores, no progress bars
        os.environ["IRQ_THREADS"] = str(job.threads)
        os.environ["IRQ_PROGRESS"] = "0"
    for p in reversed(job.spec.python_path):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    log = StageLog()
    try:
        key, status = _run(job, log)
    except EntryBusy:
        return JobResult(job.spec.label, "deferred", seconds=time.perf_counter() - start)
    except IrqError as e:
        return _failed(job, str(e), start, log)
    except Exception as e:  # a job's bug must not take the batch down; the message says what it was
        return _failed(job, f"internal error: {type(e).__name__}: {e}", start, log)
    return JobResult(job.spec.label, status, key, seconds=time.perf_counter() - start,
                     stages=tuple(log.stages.items()))


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "unknown error"


def _failed(job: Job, message: str, start: float, log: StageLog) -> JobResult:
    return JobResult(job.spec.label, "failed", error=_first_line(message), seconds=time.perf_counter() - start,
                     stages=tuple(log.stages.items()))


def _load(store: Store, ref: DataRef | None, role: str) -> tuple[DataSet | None, str | None]:
    """The data and its fingerprint, recorded for the planner under a stamp taken before reading."""
    if ref is None:
        return None, None
    stamp = stamp_key(data_what(ref, role), data_files(ref))
    data = load_ref(ref, role)
    if data is None:
        return None, None
    fingerprint = data.fingerprint()
    remember(store, stamp, data_what(ref, role), fingerprint)
    return data, fingerprint


def cached_failure(store: Store, key: str) -> str | None:
    """The error of an earlier run of exactly this job (same inputs, same code), if it failed.

    Only errors irq raised on purpose are remembered: they recur for the same key. A dead
    worker or an internal error may be transient and is never cached.
    """
    doc = store.read_json("failures", key)
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), str) or store.folder("jobs", key):
        return None
    return f"{doc['error']} (cached: same inputs and code failed before; --retry-failed runs it again)"


def _run(job: Job, log: StageLog) -> tuple[str, str]:
    spec, store = job.spec, Store(job.cache_dir)
    float_model, model_hash = import_stage(store, spec.model, log, spec.python_path)
    needs_calib = calibration_matters(target_for(spec), spec.settings.pipeline)
    calib, calib_fp = _load(store, spec.settings.calib if needs_calib else None, "calibration")
    evaluation, eval_fp = _load(store, spec.settings.eval, "evaluation")
    key = job_key(spec, model_hash, calib_fp, eval_fp)
    if done_key(job.out_dir) == key:
        return key, "up-to-date"
    failure = None if job.retry_failed else cached_failure(store, key)
    if failure is not None:
        raise IrqError(failure)
    try:
        status = _produce(job, store, key, float_model, calib, evaluation, log)
    except IrqError as e:
        store.write_json("failures", key, {"label": spec.label, "error": _first_line(str(e))})
        raise
    store.path("failures", key, ".json").unlink(missing_ok=True)
    return key, status


def _produce(job: Job, store: Store, key: str, float_model: Any, calib: Any, evaluation: Any,
             log: StageLog) -> str:
    """Build the job into the cache unless it is there, publish it; "built" or "copied"."""
    from irq.data.conform import conform

    status = "copied"
    if store.folder("jobs", key) is None:
        with store.lock("jobs", key, wait=not job.may_defer):
            if store.folder("jobs", key) is None:
                if calib is not None:
                    calib = conform(calib, float_model.graph, "calibration")
                if evaluation is not None:
                    evaluation = conform(evaluation, float_model.graph, "evaluation")
                with store.new_folder("jobs", key) as tmp:
                    _build(job, float_model, calib, evaluation, tmp, key, log)
                status = "built"
    _publish(store.path("jobs", key), job.out_dir, key)
    return status


def _build(job: Job, float_model: Any, calib: Any, evaluation: Any, folder: Path, key: str, log: StageLog) -> None:
    """Quantize, lower, verify and write report.json into ``folder``."""
    from irq.compiler import Stages
    from irq.pipeline.infra import DisablePassesInstrument, Instrument, TimingInstrument
    from irq.pipeline.targets import get_backend
    from irq.verify.checks import VerifyOptions, finalize

    start, spec = time.perf_counter(), job.spec
    target = target_for(spec)
    timing = TimingInstrument()
    instruments: list[Instrument] = [timing]
    if spec.settings.disable_passes:
        instruments.append(DisablePassesInstrument(frozenset(spec.settings.disable_passes)))
    qmodel = quantize_cached(Store(job.cache_dir), float_model, target, calib, spec.settings.recipe,
                             spec.settings.pipeline, instruments, log, wait=not job.may_defer)
    if log.stages.get("calibrate") == "hit":
        timing.timings.append(("calibrate (cached)", 0.0))
    artifact = get_backend(target.backend).lower(qmodel, target, folder)
    stages = Stages.lowered(float_model, qmodel, artifact, target, evaluation)
    report = stages.report(timing.timings, None, VerifyOptions(measure_latency=spec.settings.latency))
    report.artifact = str(artifact.path.relative_to(folder))  # made absolute when published
    report.wall_seconds = round(time.perf_counter() - start, 3)
    report.batch = {"key": key, "stages": dict(log.stages)}
    finalize(report, folder / REPORT)


def _publish(entry: Path, out_dir: Path, key: str) -> None:
    """Copy a finished cache entry to ``out_dir`` with its done marker, in one rename."""
    from irq.report.build import write_report

    with atomic_path(out_dir) as tmp:
        shutil.copytree(entry, tmp)
        report = json.loads((tmp / REPORT).read_text())
        name = report["artifact"]
        report["artifact"] = str(out_dir / name)
        write_report(tmp / REPORT, report)
        (tmp / DONE).write_text(json.dumps({"key": key, "artifact": name}) + "\n")
