"""TFLite lowering: float ONNX -> onnx2tf Keras model -> TFLite converter -> ``model.tflite``.

TensorFlow is imported only when a model is lowered or run, not when this package is imported.
"""

from irq.backends.tflite.backend import TFLiteBackend

__all__ = ["TFLiteBackend"]
