"""Task metrics for the corpus, in irq's metric form: ``fn(float_outputs, artifact_outputs, labels) -> float``.

Float's answer is the reference (higher is better, 1.0 = the artifact answers like float):

- ``ctc_agreement``: share of text lines a CTC recogniser reads exactly as float does;
- ``yolox_f1``: F1 of the artifact's detections against float's (YOLOX raw head, NMS, IoU >= 0.5);
- ``mask_iou``: IoU of thresholded probability maps (text detectors, segmenters);
- ``anchor_f1``: F1 of the anchors an SSD-style detector fires (sigmoid(score) > 0.5) against float's
  (not measurable, :class:`NotMeasurable`, when float fires fewer than ``MIN_FIRED_ANCHORS``);
- ``vad_agreement``: share of audio chunks whose speech/non-speech decision matches float's;
- ``landmark_agreement``: 1 - mean landmark distance, relative to the spread of float's landmarks.
"""

from __future__ import annotations

import numpy as np

#: Fewest anchors float must fire over the data for an anchor F1 to mean anything: palm detection
#: fired 2 on 48 photos without hands, so one anchor crossing 0.5 swung its F1 from 0 to 1.
MIN_FIRED_ANCHORS = 20


class NotMeasurable(ValueError):
    """The data do not exercise what the metric measures (the matrix says n/a, with this reason)."""


def _ctc_decode(indices: np.ndarray) -> tuple[int, ...]:
    """Greedy CTC: collapse repeats, drop the blank (0)."""
    out, prev = [], -1
    for i in indices.tolist():
        if i != prev and i != 0:
            out.append(i)
        prev = i
    return tuple(out)


def _sequence_probs(output: np.ndarray) -> np.ndarray:
    """(N, T, C) scores from (N, T, C) or sequence-first (N, T, 1, C) outputs (batch moved to axis 0)."""
    if output.ndim == 4 and output.shape[2] == 1:  # (N, T, 1, C): a sequence-first model fed one at a time
        return output[:, :, 0, :]
    if output.ndim != 3:
        raise ValueError(f"expected (N, T, C) sequence scores, got shape {output.shape}")
    return output


def ctc_texts(output: np.ndarray) -> list[tuple[int, ...]]:
    """The decoded index sequence of each sample."""
    return [_ctc_decode(row) for row in _sequence_probs(output).argmax(axis=-1)]


def ctc_agreement(ref: list[np.ndarray], out: list[np.ndarray], labels: np.ndarray | None) -> float:
    """Share of samples decoded to exactly float's text."""
    a, b = ctc_texts(ref[0]), ctc_texts(out[0])
    return float(np.mean([x == y for x, y in zip(a, b, strict=True)]))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float = 0.45) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression."""
    order, keep = scores.argsort()[::-1], []
    while order.size:
        i = order[0]
        keep.append(i)
        order = order[1:][_iou(boxes[i], boxes[order[1:]]) <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _match_f1(pairs: list[tuple[np.ndarray, np.ndarray]], iou: float = 0.5) -> float:
    """F1 over (reference boxes, predicted boxes) per sample; greedy one-to-one matching."""
    tp = fp = fn = 0
    for ref, got in pairs:
        used = np.zeros(len(got), bool)
        for r in ref:
            if len(got):
                overlaps = np.where(used, -1.0, _iou(r, got))
                j = int(overlaps.argmax())
                if overlaps[j] >= iou:
                    used[j] = True
                    tp += 1
                    continue
            fn += 1
        fp += int((~used).sum())
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def yolox_boxes(output: np.ndarray, size: tuple[int, int], score: float = 0.3) -> list[np.ndarray]:
    """Boxes (x1, y1, x2, y2) after YOLOX decoding (strides 8/16/32), score threshold and NMS."""
    grids, strides = [], []
    for s in (8, 16, 32):
        h, w = size[0] // s, size[1] // s
        xv, yv = np.meshgrid(np.arange(w), np.arange(h))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((h * w, 1), s))
    grid, stride = np.concatenate(grids), np.concatenate(strides)
    found = []
    for pred in output.astype(np.float64):
        xy = (pred[:, :2] + grid) * stride
        wh = np.exp(np.clip(pred[:, 2:4], -10, 10)) * stride
        scores = pred[:, 4] * pred[:, 5:].max(axis=1)
        keep = scores > score
        boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)[keep]
        found.append(boxes[nms(boxes, scores[keep])] if keep.any() else np.zeros((0, 4)))
    return found


def yolox_f1(ref: list[np.ndarray], out: list[np.ndarray], labels: np.ndarray | None,
             size: tuple[int, int] = (416, 416)) -> float:
    """Detection F1 of the artifact against float (YOLOX head at ``size``)."""
    return _match_f1(list(zip(yolox_boxes(ref[0], size), yolox_boxes(out[0], size), strict=True)))


def mask_iou(ref: list[np.ndarray], out: list[np.ndarray], labels: np.ndarray | None,
             threshold: float = 0.3) -> float:
    """IoU of ``output > threshold`` over the whole set (output 0)."""
    a, b = ref[0] > threshold, out[0] > threshold
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def selfie_iou(ref: list[np.ndarray], out: list[np.ndarray], labels: np.ndarray | None) -> float:
    """Mask IoU at 0.5 (segmentation probabilities)."""
    return mask_iou(ref, out, labels, 0.5)


def _output_with_last(outputs: list[np.ndarray], width: int) -> np.ndarray:
    return next(o for o in outputs if o.shape[-1] == width)


def anchor_f1(ref: list[np.ndarray], out: list[np.ndarray], labels: np.ndarray | None) -> float:
    """F1 of the anchors whose score logit is positive (sigmoid > 0.5), artifact vs float."""
    r, o = _output_with_last(ref, 1) > 0, _output_with_last(out, 1) > 0
    if int(r.sum()) < MIN_FIRED_ANCHORS:
        raise NotMeasurable(f"float fires {int(r.sum())} anchors (sigmoid > 0.5) on {len(ref[0])} samples, fewer "
                            f"than {MIN_FIRED_ANCHORS}: the data hardly exercise this detector")
    tp = int(np.logical_and(r, o).sum())
    fp, fn = int(np.logical_and(~r, o).sum()), int(np.logical_and(r, ~o).sum())
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def vad_agreement(ref: list[np.ndarray], out: list[np.ndarray], labels: np.ndarray | None) -> float:
    """Share of chunks whose speech decision (probability > 0.5) matches float's."""
    return float(np.mean((ref[0].reshape(len(ref[0]), -1)[:, 0] > 0.5)
                         == (out[0].reshape(len(out[0]), -1)[:, 0] > 0.5)))


def landmark_agreement(ref: list[np.ndarray], out: list[np.ndarray], labels: np.ndarray | None) -> float:
    """1 - mean |artifact - float| / spread of float's landmarks.

    The landmarks are the largest output that is a flat vector of coordinates per sample (a pose
    model also returns a segmentation mask and heatmaps, larger but not landmarks).
    """
    flat = [k for k, a in enumerate(ref) if sum(d > 1 for d in a.shape[1:]) <= 1] or list(range(len(ref)))
    k = max(flat, key=lambda i: ref[i][0].size)
    r = ref[k]
    o = out[k] if len(out) == len(ref) else max(out, key=lambda a: a[0].size)
    r64, o64 = r.reshape(len(r), -1).astype(np.float64), o.reshape(len(o), -1).astype(np.float64)
    spread = np.maximum(r64.std(axis=1), 1e-6)
    return float(1.0 - np.mean(np.abs(r64 - o64).mean(axis=1) / spread))
