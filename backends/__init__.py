"""Backends: lower the irq IR to ONNX, TFLite and Core ML artifacts, and run them."""
