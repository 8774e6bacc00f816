"""Verification: the float model and the artifact on the same data, each in its own runtime.

Measures how far the artifact's answers are from the float model's and from the labels.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from irq.backends.base import Runner
from irq.data import DataSet
from irq.errors import DataError, VerificationError
from irq.metrics import classification_metrics, error


def run_dataset(runner: Runner, data: DataSet, batch_size: int = 32) -> list[np.ndarray]:
    """All outputs of ``runner`` over ``data``, concatenated along the sample axis."""
    size = min(batch_size, runner.max_batch or batch_size)
    chunks: list[list[np.ndarray]] = []
    for batch in data.batches(size):
        try:
            outs = runner.run(batch)
        except Exception as e:  # runtimes raise their own error types
            raise VerificationError(f"{runner.runtime} failed to run the artifact: "
                                    f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        chunks.append([np.asarray(o) for o in outs])
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def is_classifier(output: np.ndarray) -> bool:
    """A (N, C) output with C > 1 is read as class scores."""
    return output.ndim == 2 and output.shape[1] > 1


def check_labels(data: DataSet, num_classes: int) -> None:
    """DataError when a label is not an integer class index of the model."""
    if data.labels is None:
        return
    y = np.asarray(data.labels)
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{data.source}: labels must be integers, got {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{data.source}: labels out of range [0, {num_classes - 1}] "
                        f"(found {int(y.min())}..{int(y.max())})")


def compare(ref_outputs: list[np.ndarray], outputs: list[np.ndarray], labels: np.ndarray | None) -> dict[str, Any]:
    """The report's accuracy and error sections for one artifact against float."""
    if len(ref_outputs) != len(outputs):
        raise VerificationError(f"artifact has {len(outputs)} outputs, float model {len(ref_outputs)}")
    result: dict[str, Any] = {"samples": len(ref_outputs[0])}
    for i, (r, o) in enumerate(zip(ref_outputs, outputs, strict=True)):
        if r.shape != o.shape:
            raise VerificationError(f"output {i}: artifact shape {o.shape} differs from float {r.shape}")
    result["error"] = error(ref_outputs[0], outputs[0])
    if len(outputs) > 1:
        result["error"]["per_output"] = [error(r, o) for r, o in zip(ref_outputs, outputs, strict=True)]
    if is_classifier(ref_outputs[0]):
        result.update(classification_metrics(ref_outputs[0], outputs[0], labels))
    return result


def latency(runner: Runner, data: DataSet, runs: int = 30, warmup: int = 5) -> dict[str, float]:
    """Median and p90 wall time (ms) of one single-sample inference."""
    sample = next(data.batches(1))
    for _ in range(warmup):
        runner.run(sample)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.run(sample)
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "runs": runs}


def interleaved_latency(runners: list[Runner], data: DataSet, runs: int = 30, warmup: int = 5,
                        rounds: int = 3) -> list[dict[str, float]]:
    """Single-sample latency (ms) of several runners, taking turns in blocks.

    Each of ``rounds`` rounds gives every runner a warm-up and then its share of the timed
    runs, so a change in machine load or clock speed does not favour one runner. Blocks, not
    single runs, because a runtime's worker threads keep spinning for a while after a call and
    would slow whichever runner goes next.
    """
    sample = next(data.batches(1))
    per_round = -(-runs // rounds)
    times: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        for r, t in zip(runners, times, strict=True):
            for _ in range(warmup):
                r.run(sample)
            for _ in range(per_round):
                start = time.perf_counter()
                r.run(sample)
                t.append((time.perf_counter() - start) * 1e3)
    return [{"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)), "runs": len(t)} for t in times]
