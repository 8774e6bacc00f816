"""Accuracy and error metrics between a float model's outputs and an artifact's (pure numpy)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


def topk(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries per row, best first."""
    k = min(k, logits.shape[1])
    idx = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(logits, idx, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(idx, order, axis=1)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 and top-5 accuracy."""
    top = topk(logits, 5)
    return {"top1": float(np.mean(top[:, 0] == labels)),
            "top5": float(np.mean((top == labels[:, None]).any(axis=1)))}


def agreement(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Top-1 agreement with the float model, and how often float's top-1 is in the artifact's top 5."""
    ref_top1 = ref.argmax(axis=1)
    top = topk(out, 5)
    return {"top1": float(np.mean(top[:, 0] == ref_top1)),
            "top5": float(np.mean((top == ref_top1[:, None]).any(axis=1)))}


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = x.astype(np.float64) - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def kl_divergence(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Per-sample KL(softmax(ref) || softmax(out))."""
    p, q = softmax(ref), softmax(out)
    return np.sum(p * (np.log(np.maximum(p, 1e-30)) - np.log(np.maximum(q, 1e-30))), axis=1)


def sample_cosines(r: np.ndarray, o: np.ndarray) -> np.ndarray:
    """Cosine similarity of each sample (row) of two (N, ...) arrays; 1 where both are zero."""
    r64 = r.reshape(len(r), -1).astype(np.float64)
    o64 = o.reshape(len(o), -1).astype(np.float64)
    den = np.linalg.norm(r64, axis=1) * np.linalg.norm(o64, axis=1)
    return np.where(den > 0, np.sum(r64 * o64, axis=1) / np.maximum(den, 1e-30), 1.0)


@dataclass
class ErrorStats:
    """SQNR, MSE, mean per-sample cosine and max abs error, accumulated batch by batch.

    The one place these figures are computed (report, per-layer SQNR, sensitivity, budgets), with
    one rule for non-finite outputs: a NaN or inf anywhere scores worst on every figure
    (SQNR -inf, MSE and max error inf, cosine -1). Identical outputs give SQNR inf.
    """

    signal: float = 0.0
    noise: float = 0.0
    cos_sum: float = 0.0
    values: int = 0
    samples: int = 0
    max_abs: float = 0.0
    finite: bool = True

    def add(self, r: np.ndarray, o: np.ndarray) -> ErrorStats:
        """Accumulate one batch (samples on axis 0); returns itself."""
        r64 = r.reshape(len(r), -1).astype(np.float64)
        o64 = o.reshape(len(o), -1).astype(np.float64)
        self.samples += len(r)
        self.values += o64.size
        if not np.isfinite(o64).all():
            self.finite = False
            return self
        d = r64 - o64
        self.signal += float(np.sum(r64 ** 2))
        self.noise += float(np.sum(d ** 2))
        self.max_abs = max(self.max_abs, float(np.max(np.abs(d))) if d.size else 0.0)
        self.cos_sum += float(np.sum(sample_cosines(r64, o64)))
        return self

    def result(self) -> dict[str, float]:
        """The figures over everything added."""
        if not self.finite:
            return {"sqnr_db": -math.inf, "mse": math.inf, "cosine": -1.0, "max_abs": math.inf}
        sqnr = math.inf if self.noise == 0 else 10 * math.log10(max(self.signal, 1e-30) / self.noise)
        return {"sqnr_db": sqnr, "mse": self.noise / max(self.values, 1), "cosine": self.cos_sum / max(self.samples, 1),
                "max_abs": self.max_abs}


def error(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """MSE, SQNR (dB), mean per-sample cosine and max abs error (see :class:`ErrorStats`)."""
    return ErrorStats().add(ref, out).result()


def per_class_drop(ref: np.ndarray, out: np.ndarray, labels: np.ndarray, worst: int = 5) -> list[dict[str, Any]]:
    """The classes whose accuracy drops most (a class can collapse while the mean holds)."""
    rows = []
    for c in np.unique(labels):
        m = labels == c
        a_ref = float(np.mean(ref[m].argmax(axis=1) == c))
        a_out = float(np.mean(out[m].argmax(axis=1) == c))
        rows.append({"class": int(c), "samples": int(m.sum()), "float": a_ref, "artifact": a_out,
                     "drop": a_ref - a_out})
    return sorted(rows, key=lambda r: -r["drop"])[:worst]


def classification_metrics(ref: np.ndarray, out: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """Everything the report says about a classifier's first output."""
    result: dict[str, Any] = {"agreement": agreement(ref, out)}
    kl = kl_divergence(ref, out)
    confident = softmax(ref).max(axis=1) >= 0.5
    result["kl"] = {"mean": float(kl.mean()), "median": float(np.median(kl))}
    if confident.any():
        result["agreement"]["top1_confident"] = float(np.mean(
            ref[confident].argmax(axis=1) == out[confident].argmax(axis=1)))
        result["agreement"]["confident_samples"] = int(confident.sum())
    if labels is not None:
        result["accuracy"] = {"float": accuracy(ref, labels), "artifact": accuracy(out, labels)}
        result["accuracy"]["drop_top1_pt"] = 100 * (result["accuracy"]["float"]["top1"]
                                                    - result["accuracy"]["artifact"]["top1"])
        result["per_class_worst"] = per_class_drop(ref, out, labels)
    return result
