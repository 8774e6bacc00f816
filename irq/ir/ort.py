"""onnxruntime helpers: sessions from in-memory models, exposing intermediate values, batching."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from irq.errors import VerificationError


def make_session(model: onnx.ModelProto | bytes | str, threads: int | None = None,
                 optimize: bool = True) -> ort.InferenceSession:
    """A CPU session; ``threads`` defaults to ``$IRQ_THREADS``, else the machine's cores.

    ``irq batch`` sets ``IRQ_THREADS`` in its workers to their share of the cores: sessions in
    parallel processes that each spin one thread per core slow each other down.
    """
    opts = ort.SessionOptions()
    env = os.environ.get("IRQ_THREADS", "")
    opts.intra_op_num_threads = threads or (int(env) if env.isdigit() else 0) or (os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    payload = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    try:
        return ort.InferenceSession(payload, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own untyped errors
        raise VerificationError(f"onnxruntime cannot load the model: {str(e).splitlines()[0]}") from e


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs the float values ``names``."""
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    existing = {o.name for o in augmented.graph.output}
    for name in names:
        if name not in existing:
            augmented.graph.output.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return augmented


def batch_limit(session: ort.InferenceSession) -> int | None:
    """1 when any input has a fixed batch dimension of 1, else None (any batch)."""
    for i in session.get_inputs():
        if i.shape and isinstance(i.shape[0], int) and i.shape[0] == 1:
            return 1
    return None


def rebatch(batches: Iterator[dict[str, np.ndarray]], size: int | None) -> Iterator[dict[str, np.ndarray]]:
    """Split batches into pieces of at most ``size`` samples (None: unchanged)."""
    for batch in batches:
        n = len(next(iter(batch.values())))
        if size is None or n <= size:
            yield batch
            continue
        for s in range(0, n, size):
            yield {k: v[s:s + size] for k, v in batch.items()}
