"""Shared helpers for the benches: ORT's quantizer as the baseline, peak RSS, timing, tables."""

from __future__ import annotations

import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from irq.data import DataSet


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(result, seconds)."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def ort_quantize_static(model_path: Path, calib: DataSet, out: Path, **kwargs: Any) -> Path:
    """onnxruntime's quantize_static with its defaults unless overridden (the baseline)."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calib.batches(1))

        def get_next(self):
            return next(self._it, None)

    quantize_static(str(model_path), str(out), Reader(), **kwargs)
    return out


def run_model(path: str | Path | bytes, data: DataSet, batch: int = 16) -> np.ndarray:
    """First output of a model over a data set (onnxruntime, all cores)."""
    from irq.backends.onnx_qdq import OnnxRunner
    from irq.verify.run import run_dataset

    return run_dataset(OnnxRunner(str(path) if isinstance(path, Path) else path), data, batch)[0]


def scratch() -> Path:
    """A fresh temporary folder."""
    return Path(tempfile.mkdtemp(prefix="irq-bench-"))


def machine() -> str:
    """One line describing the machine (for RESULTS.md)."""
    import platform

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
