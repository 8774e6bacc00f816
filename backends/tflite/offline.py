"""Keep onnx2tf and TensorFlow offline, quiet and on the machine's thread budget.

onnx2tf downloads ``calibration_image_sample_data_20x128x128x3_float32.npy`` from GitHub for
every model whose inputs are all 4-D with 3 channels, even when it only builds a Keras model,
and uses it for its internal dummy inference. :func:`offline_onnx2tf` hands it a local array
instead (the first calibration samples when there are any) and runs it in a scratch working
directory, so neither the network nor the caller's directory is touched.

Both contexts change process-wide state (working directory, file descriptors 1 and 2, one
module attribute) for their duration: lowering is not meant to run in several threads at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
THREADS = 2  # the build machines have two cores; more threads only add contention


class CapturedOutput:
    """Text written to stdout/stderr (Python or native) inside :func:`captured_output`."""

    def __init__(self, sink: IO[bytes], python: io.StringIO) -> None:
        self._sink, self._python = sink, python
        self._final: str | None = None

    @property
    def text(self) -> str:
        """Everything captured so far (readable during and after the block)."""
        if self._final is not None:
            return self._final
        _flush_c_stdio()
        self._sink.seek(0)
        return self._python.getvalue() + self._sink.read().decode(errors="replace")

    def close(self) -> None:
        """Keep the text; the sink file goes away with the block."""
        self._final = self.text

    def tail(self, lines: int = 12) -> str:
        """The last ``lines`` non-empty lines, for error messages."""
        kept = [ln for ln in self.text.splitlines() if ln.strip()]
        return "\n".join(kept[-lines:])


@contextlib.contextmanager
def captured_output() -> Iterator[CapturedOutput]:
    """Collect everything printed by Python code and native libraries during the block.

    onnx2tf, tf_keras and the TFLite converter print progress and diagnostics from Python and
    from C++ (``fully_quantize: 0, ...``); a library must not print, but the text is kept for
    error messages.
    """
    py_buffer = io.StringIO()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    with tempfile.TemporaryFile() as sink:
        captured = CapturedOutput(sink, py_buffer)
        try:
            saved = [os.dup(1), os.dup(2)]
        except OSError:  # no descriptors 1/2 (a detached process): nothing native can leak
            saved = []
        try:
            for fd in (1, 2) if saved else ():
                os.dup2(sink.fileno(), fd)
            with contextlib.redirect_stdout(py_buffer), contextlib.redirect_stderr(py_buffer):
                yield captured
        finally:
            _flush_c_stdio()
            for fd, original in zip((1, 2), saved, strict=False):
                os.dup2(original, fd)
                os.close(original)
            captured.close()


def _flush_c_stdio() -> None:
    """Flush C stdio buffers so native output lands in the capture, not after it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)


def sample_images(calibration: dict[str, np.ndarray] | None) -> np.ndarray:
    """The NHWC float32 array onnx2tf would otherwise download (shape N x H x W x 3).

    onnx2tf resizes it to the model's input size and takes the first ``batch`` samples, so
    real calibration images (when there is a 4-D 3-channel input) serve better than noise.
    """
    for array in (calibration or {}).values():
        if array.ndim == 4 and array.shape[1] == 3 and len(array) > 0:
            return np.ascontiguousarray(np.transpose(array[:20], (0, 2, 3, 1)), dtype=np.float32)
    return np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32)


@contextlib.contextmanager
def offline_onnx2tf(sample: np.ndarray) -> Iterator[Path]:
    """Run onnx2tf with its sample-data download replaced by ``sample``, in a scratch directory."""
    import onnx2tf.onnx2tf as o2t
    import onnx2tf.utils.common_functions as o2t_common

    def local_sample() -> np.ndarray:
        return sample

    patched = [(o2t, o2t.download_test_image_data), (o2t_common, o2t_common.download_test_image_data)]
    old_cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="irq-onnx2tf-") as scratch:
        # The file is a second guard: should onnx2tf reach the original function through a
        # path not patched here, it finds the file in its working directory and stays local.
        np.save(Path(scratch) / SAMPLE_FILE, sample)
        try:
            for module, _ in patched:
                module.download_test_image_data = local_sample
            os.chdir(scratch)
            yield Path(scratch)
        finally:
            os.chdir(old_cwd)
            for module, original in patched:
                module.download_test_image_data = original


def limit_tensorflow_threads() -> None:
    """Ask TensorFlow for ``THREADS`` intra- and inter-op threads (no-op once TF has started)."""
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):  # raised when the runtime is already initialised
        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(THREADS)
