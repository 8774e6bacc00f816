"""TensorFlow/Keras frontend through tf2onnx (which co-installs with the pinned stack)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irq.errors import InputError, ModelImportError
from irq.ir.model import QModel

from .onnx_file import from_proto


def load_keras(path: str | Path) -> QModel:
    """Load a saved Keras model (.keras or .h5, tf_keras format) and convert it."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: model file not found")
    import tf_keras

    try:
        model = tf_keras.models.load_model(str(path), compile=False)
    except (OSError, ValueError) as e:
        raise ModelImportError(f"{path}: not a loadable Keras model ({str(e).splitlines()[0]})") from e
    return from_keras(model, name=path.stem)


def from_keras(model: Any, name: str | None = None, opset: int = 17) -> QModel:
    """Convert a Keras model (tf.keras / tf_keras) to the IR."""
    import tensorflow as tf
    import tf2onnx

    signature = [tf.TensorSpec(i.shape, i.dtype, name=i.name.split(":")[0]) for i in model.inputs]
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    except Exception as e:  # tf2onnx raises many unrelated types
        raise ModelImportError(f"tf2onnx failed for {name or model.name}: {str(e).splitlines()[0]}") from e
    return from_proto(proto, name or model.name)
