"""Accuracy and error metrics between a float model's outputs and an artifact's (pure numpy)."""

from __future__ import annotations

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


def error(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """MSE, SQNR (dB), mean per-sample cosine and max abs error; non-finite outputs count."""
    r = ref.reshape(len(ref), -1).astype(np.float64)
    o = out.reshape(len(out), -1).astype(np.float64)
    finite = bool(np.isfinite(o).all())
    diff = np.nan_to_num(r - o, nan=np.inf)
    mse = float(np.mean(diff**2)) if finite else float("inf")
    noise = float(np.sum(diff**2))
    signal = float(np.sum(r**2))
    sqnr = float(10 * np.log10(signal / noise)) if noise > 0 else float("inf")
    num = np.sum(r * o, axis=1)
    den = np.linalg.norm(r, axis=1) * np.linalg.norm(o, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)
    return {"mse": mse, "sqnr_db": sqnr if finite else float("-inf"), "cosine": float(np.mean(cos)),
            "max_abs": float(np.max(np.abs(diff))) if diff.size else 0.0}


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
