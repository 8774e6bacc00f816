"""``run_batch``: plan the manifest's jobs, skip the finished ones, run the rest, summarise.

Planning happens in this process and is cheap: for each job it hashes the model file and the
data and reads the cached import's hash; when the job's key equals the key in the output
folder's done marker, the job is up to date and never reaches a worker. Anything planning
cannot decide (an import not cached yet, data that fails to load) goes to a worker, which
computes the key itself and reports errors as that job's failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

from irq.batch.executors import run_inline, run_local, run_ray
from irq.batch.job import Job, JobResult, cached_failure, done_key, job_key, target_for
from irq.batch.manifest import load_manifest
from irq.batch.schema import DataRef, Manifest
from irq.batch.stages import calibration_matters, load_ref, source_key
from irq.batch.stamps import data_files, data_what, import_what, model_files, stamped
from irq.batch.store import EntryBusy, Store, file_lock, remove_temporaries
from irq.batch.summary import write_summary
from irq.errors import InputError, IrqError

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class BatchOptions:
    """How to run a batch (what the CLI flags set)."""

    workers: int | None = None  # local: processes at once (0: in this process); ray: tasks in flight
    executor: str = "local"
    cache_dir: Path | None = None  # default OUTDIR/.cache
    ray_address: str | None = None
    retry_failed: bool = False  # rerun jobs whose identical inputs and code failed before

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise InputError(f"unknown executor {self.executor!r} (use {', '.join(EXECUTORS)})")
        if self.workers is not None and self.workers < 0:
            raise InputError(f"workers must be >= 0, got {self.workers}")


@dataclass(frozen=True)
class BatchResult:
    """The outcome: one result per job (manifest order) and the summary document."""

    results: tuple[JobResult, ...]
    summary: dict[str, Any]
    out_dir: Path

    @property
    def failed(self) -> list[JobResult]:
        """The failed jobs."""
        return [r for r in self.results if not r.ok]

    @property
    def budget_missed(self) -> int:
        """How many finished jobs missed a budget."""
        return int(self.summary["totals"]["budget_missed"])


class _Planner:
    """Computes jobs' keys in the parent, hashing each model and data set at most once.

    Hashes are reused across runs while the files they came from keep their stat stamps
    (``irq.batch.stamps``), so a rerun with nothing changed reads no model or data.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._data: dict[tuple[DataRef, str], str | None] = {}

    def _fingerprint(self, ref: DataRef | None, role: str) -> str | None:
        if ref is None:
            return None
        if (ref, role) not in self._data:
            def compute() -> str:
                data = load_ref(ref, role)
                return "" if data is None else data.fingerprint()

            self._data[ref, role] = stamped(self.store, data_what(ref, role), data_files(ref), compute)
        return self._data[ref, role]

    def key(self, job: Job) -> str | None:
        """The job's key, or None when only a worker can tell (its import is not cached)."""
        spec = job.spec
        try:
            source = stamped(self.store, import_what(spec.model), model_files(spec.model, spec.python_path),
                             lambda: source_key(spec.model, spec.python_path))
            meta = self.store.read_json("imports", source)
            if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):
                return None
            calib = spec.settings.calib if calibration_matters(target_for(spec), spec.settings.pipeline) else None
            return job_key(spec, meta["sha256"], self._fingerprint(calib, "calibration"),
                           self._fingerprint(spec.settings.eval, "evaluation"))
        except IrqError:
            return None  # the worker hits the same error and reports it as this job's failure


def _interleave(jobs: list[Job]) -> list[Job]:
    """Round-robin over models, so a model's targets rarely start together (they share stages)."""
    by_model: dict[str, list[Job]] = {}
    for job in jobs:
        by_model.setdefault(job.spec.name, []).append(job)
    return [j for group in zip_longest(*by_model.values()) for j in group if j is not None]


def run_batch(manifest: str | Path | Manifest, out_dir: str | Path, options: BatchOptions | None = None,
              on_result: Callable[[JobResult], None] | None = None,
              on_plan: Callable[[int, int], None] | None = None) -> BatchResult:
    """Run every job of ``manifest`` into ``out_dir``; finished jobs are skipped, failures isolated.

    ``on_plan(to_run, up_to_date)`` is called once planning is done, ``on_result`` once per job
    that ran (for progress displays).
    """
    start = time.perf_counter()
    options = options or BatchOptions()
    manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    out = Path(out_dir).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out}: cannot create the output folder ({e.strerror})") from e
    store = Store(Path(options.cache_dir).resolve() if options.cache_dir else out / ".cache")
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(file_lock(out / ".batch.lock", wait=False))
        except EntryBusy:
            raise InputError(f"{out}: another irq batch is writing to this folder") from None
        return _run_locked(manifest, out, store, options, on_result, on_plan, start)


def _run_locked(manifest: Manifest, out: Path, store: Store, options: BatchOptions,
                on_result: Callable[[JobResult], None] | None, on_plan: Callable[[int, int], None] | None,
                start: float) -> BatchResult:
    remove_temporaries(out)  # leftovers of a killed run: the lock says nothing else writes here now
    store.clean_stale()
    jobs = [Job(spec, out / spec.name / spec.target, store.root, retry_failed=options.retry_failed)
            for spec in manifest.jobs]
    planner = _Planner(store)
    results: dict[str, JobResult] = {}
    todo = []
    for job in jobs:
        key = planner.key(job)
        failure = None if key is None or options.retry_failed else cached_failure(store, key)
        if key is not None and done_key(job.out_dir) == key:
            results[job.spec.label] = JobResult(job.spec.label, "up-to-date", key)
        elif key is not None and failure is not None:
            results[job.spec.label] = JobResult(job.spec.label, "failed", key, error=failure)
        else:
            todo.append(job)
    if on_plan:
        on_plan(len(todo), len(jobs) - len(todo))

    def collect(result: JobResult) -> None:
        results[result.label] = result
        if on_result:
            on_result(result)

    todo = _interleave(todo)
    if todo:
        if options.executor == "ray":  # a task holds one CPU: one onnxruntime thread
            run_ray([dataclasses.replace(j, threads=1) for j in todo], options.workers or None,
                    options.ray_address, collect)
        elif options.workers == 0:
            run_inline(todo, collect)
        else:
            workers = options.workers or 1
            share = max(1, (os.cpu_count() or 1) // workers)
            run_local([dataclasses.replace(j, threads=share) for j in todo], workers, collect)
    summary = write_summary(out, jobs, results, time.perf_counter() - start)
    return BatchResult(tuple(results[j.spec.label] for j in jobs), summary, out)
