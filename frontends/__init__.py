"""Frontends: PyTorch, TensorFlow/Keras, TFLite and ONNX models imported into the irq IR.

``import_model`` picks the frontend from what it is given:
- ``onnx_file``: an ``.onnx`` path or an in-memory ModelProto (Constant-node weights hoisted,
  old opsets upgraded);
- ``tflite_model``: a float or fp16-weight ``.tflite`` (tf2onnx, checked against LiteRT);
- ``keras_model``: ``.keras`` / ``.h5`` / ``.hdf5``;
- ``torch_module``: ``package.module:function`` returning a torch module and an example input;
- otherwise a zoo name (``irq.zoo``).
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from irq.ir.model import QModel


def import_model(spec: str | Path | QModel | onnx.ModelProto) -> QModel:
    """Load a model from an ONNX path, a zoo name or ``package.module:function``."""
    from irq.frontends.onnx_file import from_proto, load_onnx

    if isinstance(spec, QModel):
        return spec.clone()
    if isinstance(spec, onnx.ModelProto):
        return from_proto(spec, spec.graph.name or "model")
    text = str(spec)
    if text.endswith(".tflite"):
        from irq.frontends.tflite_model import load_tflite

        return load_tflite(text)
    if text.endswith((".keras", ".h5", ".hdf5")):
        from irq.frontends.keras_model import load_keras

        return load_keras(text)
    if text.endswith(".onnx") or os.sep in text or Path(text).exists():
        return load_onnx(text)
    if ":" in text:
        from irq.frontends.torch_module import load_callable

        return load_callable(text)
    from irq import zoo

    return load_onnx(zoo.get(text).onnx_path)
