"""The MediaPipe float .tflite models of ``mediapipe==0.10.14``, fed photo crops in their own NHWC layout.

Input ranges follow MediaPipe's graphs: the detectors of faces and poses take [-1, 1], the
landmark models, palm detector and segmenters [0, 1]. The photos are the ``irq.zoo.photos`` set
(split by photo); they show faces (astronaut, Grace Hopper, ...) but few hands, so the metrics
compare the artifact with float, not with ground truth.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from irq.data import DataSet
from wild import data, metrics
from wild.data import CAL

_TARGETS = ("tflite-int8", "tflite-fp16", "onnx-int8", "onnx-int8-arm", "onnx-fp16", "coreml-int8", "coreml-w8a8",
            "onnx-fp32")


def _crops(size: tuple[int, int], signed: bool) -> Callable[[str, int], DataSet]:
    def build(split: str, n: int) -> DataSet:
        h, w = size
        crops = data.photo_crops(n, max(h, w), split, seed=21 if split == CAL else 22)
        if h != w:
            from PIL import Image

            crops = np.stack([np.asarray(Image.fromarray(c).resize((w, h), Image.Resampling.BILINEAR)) for c in crops])
        x = crops.astype(np.float32) / 255.0
        return DataSet({"x": (x * 2.0 - 1.0) if signed else x}, source=f"photo crops ({split})")
    return build


def _entries() -> tuple:
    from wild.models import CorpusModel, _file

    def entry(name: str, member: str, size: tuple[int, int], signed: bool, kind: str) -> CorpusModel:
        metric, metric_name, bar = {
            "detector": (metrics.anchor_f1, "anchor F1", 0.9),
            "landmarks": (metrics.landmark_agreement, "landmark agreement", 0.9),
            "segmenter": (metrics.selfie_iou, "mask IoU", 0.9),
        }[kind]
        return CorpusModel(name, f"MediaPipe {kind}", f"mediapipe 0.10.14: {member.split('/')[-1]}",
                           _file(f"mediapipe/modules/{member}.tflite"), _crops(size, signed), metric, metric_name,
                           bar, _TARGETS, calib_samples=64, eval_samples=48)

    return (
        entry("mp-face-detection", "face_detection/face_detection_short_range", (128, 128), True, "detector"),
        entry("mp-face-detection-sparse", "face_detection/face_detection_full_range_sparse", (192, 192), True,
              "detector"),
        entry("mp-face-landmark", "face_landmark/face_landmark", (192, 192), False, "landmarks"),
        entry("mp-hand-landmark-lite", "hand_landmark/hand_landmark_lite", (224, 224), False, "landmarks"),
        entry("mp-hand-landmark-full", "hand_landmark/hand_landmark_full", (224, 224), False, "landmarks"),
        entry("mp-hand-recrop", "holistic_landmark/hand_recrop", (256, 256), False, "landmarks"),
        entry("mp-iris-landmark", "iris_landmark/iris_landmark", (64, 64), False, "landmarks"),
        entry("mp-palm-detection-lite", "palm_detection/palm_detection_lite", (192, 192), False, "detector"),
        entry("mp-palm-detection-full", "palm_detection/palm_detection_full", (192, 192), False, "detector"),
        entry("mp-pose-detection", "pose_detection/pose_detection", (224, 224), True, "detector"),
        entry("mp-pose-landmark-full", "pose_landmark/pose_landmark_full", (256, 256), False, "landmarks"),
        entry("mp-selfie-segmentation", "selfie_segmentation/selfie_segmentation", (256, 256), False, "segmenter"),
        entry("mp-selfie-landscape", "selfie_segmentation/selfie_segmentation_landscape", (144, 256), False,
              "segmenter"),
    )


MEDIAPIPE_MODELS = _entries
