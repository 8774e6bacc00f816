"""The MediaPipe float .tflite models (filled in with the TFLite frontend)."""

from __future__ import annotations

MEDIAPIPE_MODELS: tuple = ()
