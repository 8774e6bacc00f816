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
from irq.verify.metrics import classification_metrics, error


def _run(runner: Runner, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return [np.asarray(o) for o in runner.run(feed)]
    except Exception as e:  # runtimes raise their own error types
        raise VerificationError(f"{runner.runtime} failed to run the artifact: "
                                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


def _axes_from_one(outs: list[np.ndarray]) -> list[int | None]:
    """Batch axis of each output of a one-sample run: axis 0 if it is 1, else the first size-1 axis."""
    found: list[int | None] = []
    for o in outs:
        ones = [i for i, d in enumerate(o.shape) if d == 1]
        found.append(0 if o.ndim and o.shape[0] == 1 else (ones[0] if ones else None))
    return found


def output_batch_axes(runner: Runner, data: DataSet, first: list[np.ndarray], rows: int) -> list[int | None] | None:
    """Which axis of each output holds the batch, from a run of ``rows`` rows (None: cannot batch).

    Most models put it on axis 0; a sequence-first recogniser returns (T, N, C) and a recurrent
    model its state as (layers, N, hidden). With several candidate axes, a one-row run decides.
    """
    if rows == 1:
        return _axes_from_one(first)
    candidates = [[i for i, d in enumerate(o.shape) if d == rows] for o in first]
    if all(len(c) == 1 for c in candidates):
        return [c[0] for c in candidates]
    if any(not c for c in candidates):
        return None  # an output that does not grow with the batch: run one row at a time
    single = _run(runner, data.feed(0, 1))
    axes: list[int | None] = []
    for c, o in zip(candidates, single, strict=True):
        grows = [i for i in c if o.shape[i] == 1]
        if not grows:
            return None
        axes.append(grows[0])
    return axes


def run_dataset(runner: Runner, data: DataSet, batch_size: int = 32) -> list[np.ndarray]:
    """All outputs of ``runner`` over ``data``, samples on axis 0 (an output's batch axis is moved there)."""
    size = min(batch_size, runner.max_batch or batch_size, data.max_batch() or batch_size)
    axes: list[int | None] | None = None
    chunks: list[list[np.ndarray]] = []
    start = 0
    while start < len(data):
        stop = min(start + size, len(data))
        outs = _run(runner, data.feed(start, stop))
        if axes is None:
            axes = output_batch_axes(runner, data, outs, stop - start)
            if axes is None:  # cannot tell the batch axis: start again one row at a time
                size, chunks, start = 1, [], 0
                continue
        chunks.append(_batch_first(outs, axes))
        start = stop
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def _batch_first(outs: list[np.ndarray], axes: list[int | None]) -> list[np.ndarray]:
    return [o[None] if a is None else np.moveaxis(o, a, 0) for o, a in zip(outs, axes, strict=True)]


def run_together(runners: list[Runner], data: DataSet, batch_size: int = 32) -> list[list[np.ndarray]]:
    """``run_dataset`` for each of ``runners``, batch by batch in step.

    Every runner gets the same feeds object for a batch, so work they share (a common prefix)
    is done once per batch.
    """
    size = min([batch_size, data.max_batch() or batch_size, *(r.max_batch or batch_size for r in runners)])
    axes: list[list[int | None] | None] = [None] * len(runners)
    chunks: list[list[list[np.ndarray]]] = [[] for _ in runners]
    for start in range(0, len(data), size):
        stop = min(start + size, len(data))
        feeds = data.feed(start, stop)
        for i, runner in enumerate(runners):
            outs = _run(runner, feeds)
            if axes[i] is None:
                axes[i] = output_batch_axes(runner, data, outs, stop - start)
                if axes[i] is None:  # cannot tell the batch axis: this model alone, one row at a time
                    return [run_dataset(r, data, batch_size) for r in runners]
            chunks[i].append(_batch_first(outs, axes[i]))  # type: ignore[arg-type]
    return [[np.concatenate([c[j] for c in cs]) for j in range(len(cs[0]))] for cs in chunks]


def is_classifier(output: np.ndarray) -> bool:
    """A (N, C) output with C > 1 is read as class scores."""
    return output.ndim == 2 and output.shape[1] > 1


def fits_labels(output: np.ndarray, labels: np.ndarray | None) -> bool:
    """Class scores that every label indexes (any (N, C) output when there are no labels)."""
    if not is_classifier(output):
        return False
    if labels is None or not len(labels):
        return True
    y = np.asarray(labels)
    return bool(np.issubdtype(y.dtype, np.integer) and y.min() >= 0 and y.max() < output.shape[1])


def scored_output(ref_outputs: list[np.ndarray], names: list[str], labels: np.ndarray | None,
                  wanted: str | None = None) -> int | None:
    """Which output accuracy and agreement read: ``wanted`` by name, else the first that fits class scores.

    Never blindly output 0: a detector's boxes are not class scores. VerificationError when
    ``wanted`` is not an output, or is one whose shape cannot be class scores for these labels.
    """
    if wanted is not None:
        if wanted not in names:
            raise VerificationError(f"--output {wanted!r} is not an output of the model (outputs: {', '.join(names)})")
        index = names.index(wanted)
        if not is_classifier(ref_outputs[index]):
            return index  # scored by error figures only
        if labels is not None:
            check_labels_for(labels, ref_outputs[index].shape[1], wanted)
        return index
    fitting = [i for i, o in enumerate(ref_outputs) if fits_labels(o, labels)]
    if len(fitting) <= 1:
        return fitting[0] if fitting else None
    if labels is not None and len(labels):
        # Several (N, C) outputs fit (landmarks can have as many columns as there are classes): the
        # class scores are the output that predicts the labels, so take float's most accurate one.
        y = np.asarray(labels)
        return max(fitting, key=lambda i: (float(np.mean(ref_outputs[i].argmax(axis=1) == y)), -i))
    probabilities = [i for i in fitting if _is_distribution(ref_outputs[i])]
    return (probabilities or fitting)[0]


def _is_distribution(output: np.ndarray) -> bool:
    """Rows that are probability distributions (softmax outputs)."""
    o = np.asarray(output, np.float64)
    return bool(o.size and np.all(o >= 0) and np.allclose(o.sum(axis=1), 1.0, atol=1e-3))


def check_labels_for(labels: np.ndarray, num_classes: int, output: str) -> None:
    """DataError when a label is not an integer class index of ``output``."""
    y = np.asarray(labels)
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"labels must be integers, got {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"labels out of range [0, {num_classes - 1}] for output {output!r} "
                        f"(found {int(y.min())}..{int(y.max())})")


def check_labels(data: DataSet, num_classes: int) -> None:
    """DataError when a label is not an integer class index of the model."""
    if data.labels is None:
        return
    try:
        check_labels_for(data.labels, num_classes, "0")
    except DataError as e:
        raise DataError(f"{data.source}: {e}") from e


def compare(ref_outputs: list[np.ndarray], outputs: list[np.ndarray], labels: np.ndarray | None,
            names: list[str] | None = None, scored: int | None = 0) -> dict[str, Any]:
    """The report's accuracy and error sections for one artifact against float.

    ``error`` describes the ``scored`` output (else output 0); ``error.per_output`` every output by
    name; classification figures come from the ``scored`` output when it holds class scores.
    """
    if len(ref_outputs) != len(outputs):
        raise VerificationError(f"artifact has {len(outputs)} outputs, float model {len(ref_outputs)}")
    names = names or [str(i) for i in range(len(outputs))]
    result: dict[str, Any] = {"samples": len(ref_outputs[0])}
    for name, r, o in zip(names, ref_outputs, outputs, strict=True):
        if r.shape != o.shape:
            raise VerificationError(f"output {name!r}: artifact shape {o.shape} differs from float {r.shape}")
    main = 0 if scored is None else scored
    result["error"] = error(ref_outputs[main], outputs[main])
    result["error"]["output"] = names[main]
    if len(outputs) > 1:
        result["error"]["per_output"] = {n: error(r, o) for n, r, o in zip(names, ref_outputs, outputs, strict=True)}
    if scored is not None and is_classifier(ref_outputs[scored]):
        result["scored_output"] = names[scored]
        result.update(classification_metrics(ref_outputs[scored], outputs[scored], labels))
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
