"""``irq batch MANIFEST -o OUTDIR``: the batch subcommand (found through irq.cli.main.SUBCOMMAND_MODULES)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from irq.errors import BudgetError, IrqError


def register(subparsers: Any) -> dict[str, Any]:
    """Add ``batch`` to the ``irq`` parser and return its handler."""
    p = subparsers.add_parser("batch", help="compile many models x targets from a manifest, cached and resumable",
                              description="Compile every model x target of a YAML/TOML manifest in parallel. "
                                          "Finished jobs are skipped on rerun; see `pydoc irq.batch`.")
    p.add_argument("manifest", help="batch manifest (.yaml, .yml, .json or .toml)")
    p.add_argument("-o", "--out", required=True, help="output folder (one subfolder per model/target)")
    p.add_argument("--workers", "-j", type=int, default=os.cpu_count() or 1,
                   help="jobs at once (local: processes, 0 = in this process; ray: tasks in flight)")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--cache", help="cache folder (default OUTDIR/.cache); may be shared between batches")
    p.add_argument("--ray-address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local instance)")
    p.add_argument("--retry-failed", action="store_true",
                   help="rerun jobs that failed before with the same inputs and code (default: report the old error)")
    return {"batch": _batch}


class _Progress:
    """A tqdm bar on stderr, plus one line per finished job."""

    def __init__(self) -> None:
        self.bar: Any = None

    def plan(self, to_run: int, up_to_date: int) -> None:
        print(f"irq batch: {to_run} job(s) to run, {up_to_date} up to date", file=sys.stderr)
        if to_run and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=to_run, file=sys.stderr, unit="job", dynamic_ncols=True)

    def result(self, r: Any) -> None:
        stages = ", ".join(f"{k} {v}" for k, v in r.stages)
        line = (f"{r.label}: {r.status} in {r.seconds:.1f} s" + (f" ({stages})" if stages else "")
                if r.ok else f"{r.label}: FAILED: {r.error}")
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
            self.bar.update(1)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _batch(args: argparse.Namespace) -> int:
    from irq.batch.runner import BatchOptions, run_batch

    options = BatchOptions(workers=args.workers, executor=args.executor, cache_dir=args.cache,
                           ray_address=args.ray_address, retry_failed=args.retry_failed)
    progress = _Progress()
    signal.signal(signal.SIGTERM, _interrupt)  # stop the workers too, not only this process
    try:
        result = run_batch(args.manifest, args.out, options, on_result=progress.result, on_plan=progress.plan)
    finally:
        progress.close()
    totals = result.summary["totals"]
    print(f"{totals['jobs']} jobs: {totals['built']} built, {totals['copied']} from cache, "
          f"{totals['up_to_date']} up to date, {totals['failed']} failed, {totals['budget_missed']} over budget "
          f"({totals['wall_seconds']:.1f} s); summary: {result.out_dir / 'summary.md'}")
    if result.failed:
        for r in result.failed:
            print(f"irq batch: {r.label} failed: {r.error}", file=sys.stderr)
        return IrqError.exit_code
    if result.budget_missed:
        print(f"irq batch: {result.budget_missed} job(s) missed their budget (see summary.md)", file=sys.stderr)
        return BudgetError.exit_code
    return 0
