"""Frontends: import PyTorch, TensorFlow/Keras and ONNX models into the irq IR."""
