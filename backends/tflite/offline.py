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
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from irq.captured import CapturedOutput, captured_output  # noqa: F401  (re-exported for the backend)

SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
THREADS = 2  # the build machines have two cores; more threads only add contention


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
