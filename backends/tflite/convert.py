"""SavedModel -> .tflite with the TFLite converter, one recipe per mode.

Full-integer conversion is split in the two steps the converter itself runs, so irq can act in
between: :func:`calibrate` records activation statistics on a float .tflite, then
:func:`quantize` runs the converter's own quantizer with irq's statistics and with the ops the
plan keeps in float denylisted (the mechanism behind ``QuantizationDebugOptions``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from irq.backends.tflite.keras_build import IOSpec
from irq.data import DataSet
from irq.errors import LoweringError

MODES = ("int8", "fp16", "dynamic", "fp32")
IO_TYPES = ("int8", "float")  # "int8": integer I/O of the activation width
#: TFLite's full-integer schemes: int8 activations, or 16x8 (int16 activations, int8 weights,
#: int64 biases) for the whole model: the converter cannot mix the two per layer.
ACTIVATION_TYPES = ("int8", "int16")


def representative_dataset(data: DataSet, inputs: list[IOSpec], batch: int | None,
                           ) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
    """A generator factory feeding calibration samples in the TFLite layout, keyed by signature name.

    Samples go one at a time (or ``batch`` at a time for a fixed-batch model): the calibrator
    fixes the input shape on its first sample.
    """
    missing = [s.onnx_name for s in inputs if s.onnx_name not in data.inputs]
    if missing:
        raise LoweringError(f"calibration data {data.source} lacks input(s) {', '.join(missing)}")
    step = batch or 1
    if len(data) < step:
        raise LoweringError(f"calibration data {data.source} has {len(data)} samples; the model's fixed "
                            f"batch needs {step}")

    def generate() -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(data) - step + 1, step):
            feed = data.feed(start, start + step)  # the data's own layout: batch axes, whole-row feeds
            yield {s.tflite_name: np.ascontiguousarray(np.transpose(feed[s.onnx_name], s.perm),
                                                       dtype=np.dtype(s.dtype)) for s in inputs}

    return generate


def make_converter(saved_model: Path, mode: str) -> object:
    """A TFLiteConverter set up for ``mode`` (int8 still needs a representative dataset)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])
    if mode != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter


def convert_float(converter: object) -> bytes:
    """Run a fp32, fp16 or dynamic-range conversion."""
    return _run(converter.convert)  # type: ignore[attr-defined]


def calibrate(converter: object, dataset: Callable[[], Iterator[dict[str, np.ndarray]]]) -> bytes:
    """The float .tflite with min/max statistics recorded on every activation."""
    converter.representative_dataset = dataset  # type: ignore[attr-defined]
    converter._experimental_calibrate_only = True  # type: ignore[attr-defined]
    return _run(converter.convert)  # type: ignore[attr-defined]


def quantize(calibrated: bytes, io: str, denylisted: list[str]) -> bytes:
    """Quantize a calibrated model to int8, keeping ops whose output is ``denylisted`` in float."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tflite_convert

    io_type = tf.int8 if io == "int8" else tf.float32

    def run() -> bytes:
        model = tflite_convert.mlir_quantize(calibrated, input_data_type=io_type, output_data_type=io_type,
                                             denylisted_nodes=denylisted or None)
        return tflite_convert.deduplicate_readonly_buffers(model)

    return _run(run)


def sixteen_by_eight(converter: object, dataset: Callable[[], Iterator[dict[str, np.ndarray]]], io: str) -> bytes:
    """The whole model in TFLite's 16x8 scheme (int16 activations, int8 weights), calibrated on ``dataset``."""
    import tensorflow as tf

    converter.representative_dataset = dataset  # type: ignore[attr-defined]
    converter.target_spec.supported_ops = [  # type: ignore[attr-defined]
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    io_type = tf.int16 if io == "int8" else tf.float32
    converter.inference_input_type = io_type  # type: ignore[attr-defined]
    converter.inference_output_type = io_type  # type: ignore[attr-defined]
    return _run(converter.convert)  # type: ignore[attr-defined]


def _run(step: Callable[[], bytes]) -> bytes:
    """Run a converter step, turning its errors into LoweringError naming unsupported ops."""
    from tensorflow.lite.python.convert import ConverterError

    try:
        return bytes(step())
    except (ConverterError, RuntimeError, ValueError) as e:
        message = str(e)
        select = re.search(r"TF Select ops: ([^\n]+)", message)
        if select:
            raise LoweringError(f"TFLite has no builtin kernel for {select.group(1).strip()} "
                                "(would need SELECT_TF_OPS, which irq does not enable)") from e
        first = next((ln.strip() for ln in message.splitlines() if "error" in ln.lower()), message[:300])
        raise LoweringError(f"TFLite converter failed: {first}") from e
