"""onnxruntime helpers: sessions from in-memory models, exposing intermediate values, batching."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from irq.errors import VerificationError

#: Initializer types handed to onnxruntime as arrays by ``make_session(..., weights_in_memory=True)``.
_ARRAY_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT8, onnx.TensorProto.UINT8,
                onnx.TensorProto.INT32, onnx.TensorProto.INT64}


def _without_weights(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """``model`` with each large initializer reduced to a stub marked external, and the arrays."""
    from onnx import numpy_helper

    graph, arrays, kept = model.graph, {}, []
    for t in graph.initializer:
        if t.data_type in _ARRAY_TYPES and t.data_location != onnx.TensorProto.EXTERNAL and \
                int(np.prod(t.dims)) >= 256:
            arrays[t.name] = numpy_helper.to_array(t)
            stub = onnx.TensorProto(name=t.name, data_type=t.data_type, dims=t.dims)
            stub.data_location = onnx.TensorProto.EXTERNAL
            stub.external_data.add(key="location", value="in-memory")
            kept.append(stub)
        else:
            kept.append(t)
    light = onnx.helper.make_graph(graph.node, graph.name, graph.input, graph.output, kept,
                                   value_info=graph.value_info)
    out = onnx.helper.make_model(light, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    out.functions.extend(model.functions)
    return out, arrays


def make_session(model: onnx.ModelProto | bytes | str, threads: int | None = None,
                 optimize: bool = True, weights_in_memory: bool = False) -> ort.InferenceSession:
    """A CPU session; ``threads`` defaults to ``$IRQ_THREADS``, else the machine's cores.

    ``irq batch`` sets ``IRQ_THREADS`` in its workers to their share of the cores: sessions in
    parallel processes that each spin one thread per core slow each other down. With
    ``weights_in_memory`` (a ModelProto only), large initializers reach onnxruntime as arrays
    instead of through protobuf serialization, which costs more than the session itself for
    the many short-lived sessions of a sensitivity run.
    """
    opts = ort.SessionOptions()
    env = os.environ.get("IRQ_THREADS", "")
    opts.intra_op_num_threads = threads or (int(env) if env.isdigit() else 0) or (os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    arrays: dict[str, np.ndarray] = {}
    values: list[ort.OrtValue] = []
    if weights_in_memory and isinstance(model, onnx.ModelProto):
        model, arrays = _without_weights(model)
        values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays.values()]
        opts.add_external_initializers(list(arrays), values)
    payload = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    try:
        session = ort.InferenceSession(payload, opts, providers=["CPUExecutionProvider"])
        if arrays:  # onnxruntime reads them in place: they live as long as the session
            session._irq_arrays = (arrays, values, opts)  # type: ignore[attr-defined]
        return session
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
