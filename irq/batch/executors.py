"""Executors: run batch jobs in parallel, in local processes or on a Ray cluster.

Both call ``irq.batch.job.run_job`` on each job and report every result as soon as it comes
in. A job that fails, or whose process dies (out of memory, a crash in a native library, a
``kill -9``), becomes a failed result; the other jobs go on.

Local: ``workers`` spawned processes (never forked: onnxruntime and TensorFlow threads do not
survive a fork) take jobs one at a time over a pipe. A process that dies takes only its own
job down: the pipe's EOF says which job it was running, and a fresh process replaces it.

A job that finds another worker computing a stage it needs (two targets of one model wanting
the same calibration) is handed back as "deferred" instead of idling its worker, and queued
again at the back; on its second turn it waits for the stage, then reads it from the cache.

Ray: each job is a task with ``num_cpus=1``. The executor joins the cluster that
``ray.init`` finds: one already initialised in this process, else ``address`` (``--ray-address``),
else the ``RAY_ADDRESS`` environment variable, else a new local instance with ``workers``
CPUs. Every Ray node needs irq installed and must see the manifest's files, the output folder
and the cache at the same paths (a shared file system).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from irq.batch.job import Job, JobResult, run_job
from irq.errors import InputError

OnResult = Callable[[JobResult], None]


def _settle(job: Job, result: JobResult, pending: deque[Job], results: list[JobResult],
            on_result: OnResult) -> None:
    """Record a result, or queue a deferred job again (at the back, and this time it waits)."""
    if result.status == "deferred":
        pending.append(dataclasses.replace(job, may_defer=False))
        return
    results.append(result)
    on_result(result)


def run_inline(jobs: Sequence[Job], on_result: OnResult) -> list[JobResult]:
    """Run the jobs one after another in this process (for debugging: no isolation)."""
    pending, results = deque(jobs), list[JobResult]()
    while pending:
        job = pending.popleft()
        _settle(job, run_job(job), pending, results, on_result)
    return results


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this worker when the batch process dies (even by kill -9)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: an orphan finishes its job (atomically), then exits
        pass


def _worker(conn: Connection) -> None:
    """A worker process: run the jobs the parent sends until it sends None or goes away."""
    _die_with_parent()
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        conn.send(run_job(job))


class _Worker:
    """A spawned worker process, its end of the pipe and the job it is running."""

    def __init__(self, ctx: Any, index: int) -> None:
        self.conn, child = ctx.Pipe()
        self.proc: BaseProcess = ctx.Process(target=_worker, args=(child,), name=f"irq-batch-{index}")
        self.proc.start()
        child.close()  # the child holds the only other end: EOF here means it died
        self.job: Job | None = None
        self.stopping = False

    def start(self, job: Job) -> bool:
        """Hand ``job`` to the worker; False when the worker is gone (the job was not sent)."""
        try:
            self.conn.send(job)
        except OSError:
            return False
        self.job = job
        return True

    def collect(self, job: Job) -> JobResult:
        """The result of ``job``, or a failed result when the process died running it."""
        self.job = None
        try:
            result = self.conn.recv()
            if isinstance(result, JobResult):
                return result
        except (EOFError, OSError):
            pass
        self.proc.join()
        code = self.proc.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return JobResult(job.spec.label, "failed", error=f"worker process died ({how})")

    def ask_to_stop(self) -> None:
        """Tell an idle worker to exit (a busy one is killed by ``stop``)."""
        if self.job is None and not self.stopping:
            self.stopping = True
            with contextlib.suppress(OSError):
                self.conn.send(None)

    def stop(self) -> None:
        """Wait a little for the worker to exit, then kill it (busy workers at once)."""
        self.ask_to_stop()
        self.proc.join(timeout=10 if self.job is None else 0)
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.conn.close()


def run_local(jobs: Sequence[Job], workers: int, on_result: OnResult) -> list[JobResult]:
    """Run the jobs in ``workers`` spawned processes; a process that dies is replaced."""
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    ctx = multiprocessing.get_context("spawn")
    pending = deque(jobs)
    pool: list[_Worker] = []
    results: list[JobResult] = []
    spawned = 0
    try:
        while pending or any(w.job is not None for w in pool):
            for w in [w for w in pool if w.job is None and not w.proc.is_alive()]:
                w.stop()  # died after its last job: replaced below
                pool.remove(w)
            while len(pool) < workers and sum(w.job is None for w in pool) < len(pending):
                spawned += 1
                pool.append(_Worker(ctx, spawned))
            for w in pool:
                if w.job is None and pending:
                    job = pending.popleft()
                    if not w.start(job):  # it died between jobs: replaced on the next round
                        pending.appendleft(job)
            busy = {w.conn: (w, w.job) for w in pool if w.job is not None}
            for conn in wait(list(busy)):
                worker, job = busy[conn]
                _settle(job, worker.collect(job), pending, results, on_result)
    finally:
        for w in pool:  # all at once: each takes about a second to shut down
            w.ask_to_stop()
        for w in pool:
            w.stop()
    return results


def _join_failure(address: str | None, error: Exception) -> str:
    """One line for a cluster ``ray.init`` could not join, with the fix for the usual cause."""
    text = "\n".join(str(e) for e in (error, error.__cause__) if e is not None)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Traceback")]
    # Ray wraps the real reason in a traceback dump; the line naming authentication is the useful one.
    auth = [ln for ln in lines if "auth" in ln.lower()]
    line = (auth or lines[-1:] or [type(error).__name__])[0]
    hint = ""
    if auth:  # `ray start --head` turns token auth on; a client must opt in too
        hint = (" (the cluster uses token authentication: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN"
                " (or RAY_AUTH_TOKEN_PATH) to its token here)")
    return f"cannot join the Ray cluster at {address or 'RAY_ADDRESS'}: {line[:300]}{hint}"


def _run_on_ray_node(job: Job) -> JobResult:
    """``run_job`` inside a Ray task, stamped with the node that ran it (the summary shows where jobs went)."""
    import ray

    return dataclasses.replace(run_job(job), node=ray.get_runtime_context().get_node_id())


def run_ray(jobs: Sequence[Job], workers: int | None, address: str | None, on_result: OnResult) -> list[JobResult]:
    """Run the jobs as Ray tasks (at most ``workers`` in flight when given)."""
    try:
        import ray
    except ImportError as e:
        raise InputError("--executor ray needs Ray: pip install ray") from e
    started = not ray.is_initialized()
    if started:
        address = address or os.environ.get("RAY_ADDRESS") or None
        try:
            ray.init(address=address, num_cpus=None if address else (workers or os.cpu_count()),
                     include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        except ConnectionError as e:
            raise InputError(_join_failure(address, e)) from e
    task = ray.remote(num_cpus=1, max_retries=0)(_run_on_ray_node)
    pending = deque(jobs)
    in_flight: dict[object, Job] = {}
    results: list[JobResult] = []
    try:
        while pending or in_flight:
            while pending and (workers is None or len(in_flight) < workers):
                job = pending.popleft()
                in_flight[task.remote(job)] = job
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                job = in_flight.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as e:  # the task's worker died or Ray lost it
                    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    result = JobResult(job.spec.label, "failed", error=f"ray: {line}")
                _settle(job, result, pending, results, on_result)
    finally:
        for ref in in_flight:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
    return results
