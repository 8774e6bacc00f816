"""The QAT loss curve as a PNG (matplotlib, without pyplot's global state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from irq.qat.train import TrainLog


def smoothed(losses: list[float], window: int) -> np.ndarray:
    """Running mean over ``window`` steps (shorter at the start)."""
    x = np.asarray(losses, dtype=np.float64)
    if window <= 1 or len(x) == 0:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def write_loss_curve(log: TrainLog, path: Path, title: str) -> bool:
    """Write the per-step loss (and its running mean) to ``path``; False when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    from irq.io import atomic_path

    fig = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps = np.arange(1, len(log.losses) + 1)
    ax.plot(steps, log.losses, color="0.75", linewidth=0.8, label="step loss")
    ax.plot(steps, smoothed(log.losses, max(len(log.losses) // 50, 1)), color="C0", label="running mean")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return True
