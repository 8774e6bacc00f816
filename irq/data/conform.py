"""Checking data against a model's inputs before anything runs on it."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from irq.data.dataset import DataSet
from irq.errors import DataError

_NUMPY = {ir.DataType.FLOAT: np.float32, ir.DataType.FLOAT16: np.float16, ir.DataType.DOUBLE: np.float64,
          ir.DataType.INT64: np.int64, ir.DataType.INT32: np.int32, ir.DataType.UINT8: np.uint8,
          ir.DataType.INT8: np.int8, ir.DataType.BOOL: np.bool_}


def _check_finite(a: np.ndarray, name: str, source: str, chunk: int = 64) -> None:
    """DataError naming the first sample with NaN/inf; reads in chunks (data may be on disk)."""
    bad_count, first = 0, -1
    for start in range(0, len(a), chunk):
        rows = np.asarray(a[start:start + chunk])
        bad = ~np.isfinite(rows.reshape(len(rows), -1)).all(axis=1)
        if bad.any() and first < 0:
            first = start + int(np.argmax(bad))
        bad_count += int(bad.sum())
    if bad_count:
        raise DataError(f"{source}: input {name!r} has NaN/inf in {bad_count} samples (first: sample {first})")


def _row_batch_axis(row_shape: tuple[int, ...], dims: list) -> int | None:
    """For a row that is a complete feed, the axis that holds its (size-1) batch, or None.

    Preferred: a size-1 axis the model leaves symbolic; else a size-1 axis the model fixes at 1.
    """
    ones = [i for i, (have, need) in enumerate(zip(row_shape, dims, strict=True)) if have == 1]
    symbolic = [i for i in ones if not isinstance(dims[i], int)]
    fixed_one = [i for i in ones if dims[i] == 1]
    found = symbolic or fixed_one
    return found[0] if found else None


def _layout(a: np.ndarray, v: ir.Value, name: str, source: str,
            batch_axis: int | None) -> tuple[int | None, bool]:
    """(batch axis, rows are complete feeds) of array ``a`` for model input ``v``."""
    dims = list(v.shape) if v.shape is not None else None
    if dims is None:
        return (0 if batch_axis is None else batch_axis), False
    rank = len(dims)
    shown = [d if isinstance(d, int) else "?" for d in dims]
    if batch_axis is not None:
        if not 0 <= batch_axis < max(rank, 1):
            raise DataError(f"{source}: --batch-axis {name}={batch_axis} is outside the input's rank {rank}")
        if a.ndim != rank:
            raise DataError(f"{source}: input {name!r} has shape {tuple(a.shape)}; with batch axis {batch_axis} "
                            f"each row must be the input without that axis (rank {rank - 1}), model expects {shown}")
        return batch_axis, False
    if a.ndim == rank:
        if rank and isinstance(dims[0], int) and dims[0] > 1 and any(not isinstance(d, int) for d in dims[1:]):
            raise DataError(f"{source}: input {name!r} is {shown}: axis 0 is fixed at {dims[0]}, so the batch is on "
                            f"a symbolic axis; give --batch-axis {name}=K, or one complete feed per row "
                            f"(an array of rank {rank + 1})")
        return 0, False
    if a.ndim == rank + 1:
        return _row_batch_axis(tuple(a.shape[1:]), dims), True
    raise DataError(f"{source}: input {name!r} has shape {tuple(a.shape)} (per sample {tuple(a.shape[1:])}), "
                    f"model expects rank {rank}: {shown} (give one row per sample, or one complete feed per "
                    f"row with an array of rank {rank + 1})")


def _check_dims(feed_shape: tuple[int, ...], dims: list | None, batch_axis: int | None, name: str,
                source: str) -> None:
    if dims is None:
        return
    if len(feed_shape) != len(dims):
        raise DataError(f"{source}: input {name!r} feeds rank {len(feed_shape)}, model expects rank {len(dims)}")
    for axis, (have, need) in enumerate(zip(feed_shape, dims, strict=True)):
        if axis != batch_axis and isinstance(need, int) and have != need:
            raise DataError(f"{source}: input {name!r} axis {axis} is {have}, model expects {need} "
                            f"(feed shape {feed_shape})")


def conform(data: DataSet, graph: ir.Graph, role: str = "calibration",
            batch_axes: dict[str, int] | None = None) -> DataSet:
    """Match ``data`` to the graph's inputs: names, ranks, fixed dims, dtypes and finiteness.

    A single array ``x`` feeds a single-input model whatever its name. An array of the input's
    rank holds one sample per row (batch on axis 0, or on ``batch_axes[name]``); an array of one
    rank more holds one complete feed per row (a recurrent state ``(N, 2, 1, 128)``, a scalar
    ``sr`` as ``(N,)``). float64 is narrowed to float32; any other dtype mismatch is an error.
    """
    inputs = [v for v in graph.inputs if v.const_value is None]
    arrays = dict(data.inputs)
    given = dict(batch_axes or {})
    if len(inputs) == 1 and len(arrays) == 1 and inputs[0].name not in arrays:
        arrays = {inputs[0].name or "": next(iter(arrays.values()))}
    if len(data) == 0:
        raise DataError(f"{data.source}: the {role} set is empty")
    unknown = set(given) - {v.name for v in inputs}
    if unknown:
        raise DataError(f"--batch-axis names {', '.join(sorted(unknown))}, which the model does not take "
                        f"(inputs: {', '.join(v.name or '' for v in inputs)})")
    out: dict[str, np.ndarray] = {}
    axes: dict[str, int | None] = {}
    row_feeds = set()
    for v in inputs:
        name = v.name or ""
        if name not in arrays:
            raise DataError(f"{data.source}: no array for model input {name!r} "
                            f"(found {', '.join(arrays) or 'none'})")
        a = arrays[name]
        want = _NUMPY.get(v.dtype)  # type: ignore[arg-type]
        if want is not None and a.dtype != want:
            if want == np.float32 and a.dtype == np.float64:
                a = a.astype(np.float32)
            else:
                raise DataError(f"{data.source}: input {name!r} has dtype {a.dtype}, model expects "
                                f"{np.dtype(want).name}")
        axes[name], whole = _layout(a, v, name, data.source, given.get(name))
        if whole:
            row_feeds.add(name)
        if np.issubdtype(a.dtype, np.floating):
            _check_finite(a, name, data.source)
        out[name] = a
    result = DataSet(out, data.labels, data.source, axes, frozenset(row_feeds))
    first = result.feed(0, 1)
    for v in inputs:
        name = v.name or ""
        _check_dims(tuple(first[name].shape), list(v.shape) if v.shape is not None else None,
                    result.batch_axis(name), name, data.source)
    return result
