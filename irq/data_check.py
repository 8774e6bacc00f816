"""Checking data against a model's inputs before anything runs on it."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from irq.data import DataSet
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


def conform(data: DataSet, graph: ir.Graph, role: str = "calibration") -> DataSet:
    """Match ``data`` to the graph's inputs: names, ranks, fixed dims, dtypes and finiteness.

    A single array ``x`` feeds a single-input model whatever its name. float64 is narrowed to
    float32 (lossless for calibration purposes); any other dtype mismatch is an error.
    """
    inputs = [v for v in graph.inputs if v.const_value is None]
    arrays = dict(data.inputs)
    if len(inputs) == 1 and len(arrays) == 1 and inputs[0].name not in arrays:
        arrays = {inputs[0].name or "": next(iter(arrays.values()))}
    if len(data) == 0:
        raise DataError(f"{data.source}: the {role} set is empty")
    out: dict[str, np.ndarray] = {}
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
        shape = list(v.shape) if v.shape is not None else None
        if shape is not None:
            if a.ndim != len(shape):
                raise DataError(f"{data.source}: input {name!r} has shape {tuple(a.shape)} (per sample "
                                f"{tuple(a.shape[1:])}), model expects rank {len(shape)}: "
                                f"{[d if isinstance(d, int) else '?' for d in shape]}")
            for axis, (have, need) in enumerate(zip(a.shape[1:], shape[1:], strict=True), start=1):
                if isinstance(need, int) and have != need:
                    raise DataError(f"{data.source}: input {name!r} axis {axis} is {have}, model expects "
                                    f"{need} (data shape {tuple(a.shape)})")
        if np.issubdtype(a.dtype, np.floating):
            _check_finite(a, name, data.source)
        out[name] = a
    return DataSet(out, data.labels, data.source)
