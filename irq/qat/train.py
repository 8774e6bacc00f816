"""The training loop: straight-through fine-tuning of a QDQModule, and its evaluation.

Training data is a torch DataLoader (any iterable of ``(inputs, labels)`` batches, inputs a
tensor, a tuple in graph-input order or a dict by input name) or an irq DataSet with labels,
which is shuffled and batched here. The loss is any callable ``loss(outputs, labels)``;
cross-entropy by default.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from irq.data import DataSet
from irq.errors import DataError, InputError
from irq.qat.translate import QDQModule

Loss = Callable[[Any, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class QATOptions:
    """How to fine-tune.

    ``lr`` is for the weights (AdamW, cosine decay to 0); ``range_lr`` for the activation
    ranges when ``learn_ranges`` (LSQ-style learned scales and zero points; otherwise the
    calibrated ranges stay fixed). ``batch_size`` applies to DataSet training data.
    ``max_steps`` (0: no limit) stops early, for smoke runs. ``device``: "auto" takes CUDA
    when torch sees a GPU.
    """

    epochs: int = 1
    lr: float = 1e-4
    range_lr: float = 1e-3
    learn_ranges: bool = False
    weight_decay: float = 0.0
    batch_size: int = 128
    max_steps: int = 0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError("epochs must be at least 1")
        if not (self.lr > 0 and self.range_lr > 0):
            raise ValueError("learning rates must be > 0")
        if self.batch_size < 1 or self.max_steps < 0:
            raise ValueError("batch_size must be >= 1 and max_steps >= 0")

    def torch_device(self) -> torch.device:
        """The device to train on."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass
class TrainLog:
    """What happened during training: per-step losses and per-epoch means."""

    losses: list[float] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    device: str = "cpu"


def cross_entropy(outputs: Any, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the first output (class scores)."""
    logits = outputs[0] if isinstance(outputs, tuple) else outputs
    return F.cross_entropy(logits, labels)


def dataset_batches(data: DataSet, batch_size: int, rng: np.random.Generator | None) -> Iterator[tuple[dict, Any]]:
    """(inputs by name, labels) batches of a DataSet, shuffled when ``rng`` is given."""
    if data.labels is None:
        raise DataError(f"{data.source}: QAT training data needs labels ('y')")
    order = rng.permutation(len(data)) if rng is not None else np.arange(len(data))
    for start in range(0, len(data), batch_size):
        idx = np.sort(order[start:start + batch_size])  # sorted: memory-mapped reads stay sequential
        yield ({k: np.asarray(v[idx]) for k, v in data.inputs.items()}, np.asarray(data.labels)[idx])


def to_device(x: Any, device: torch.device) -> Any:
    """Tensors (or arrays) inside ``x`` moved to ``device``."""
    if isinstance(x, np.ndarray):
        return torch.as_tensor(np.ascontiguousarray(x)).to(device)
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(to_device(v, device) for v in x)
    raise InputError(f"QAT batches must hold tensors or arrays, not {type(x).__name__}")


def call(module: QDQModule, inputs: Any) -> Any:
    """Run ``module`` on a batch's inputs (tensor, sequence or dict)."""
    if isinstance(inputs, dict):
        if len(inputs) == 1 and len(module.input_names) == 1:
            return module(next(iter(inputs.values())))
        return module(**inputs)
    if isinstance(inputs, list | tuple):
        return module(*inputs)
    return module(inputs)


def _batches(data: DataSet | Iterable, options: QATOptions, epoch: int) -> Iterable:
    if isinstance(data, DataSet):
        return dataset_batches(data, options.batch_size, np.random.default_rng(options.seed + epoch))
    return data


def _steps_per_epoch(data: DataSet | Iterable, batch_size: int) -> int | None:
    if isinstance(data, DataSet):
        return math.ceil(len(data) / batch_size)
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


def train(module: QDQModule, data: DataSet | Iterable, options: QATOptions, loss_fn: Loss | None = None) -> TrainLog:
    """Fine-tune ``module`` in place; returns the loss log."""
    loss_fn = loss_fn or cross_entropy
    device = options.torch_device()
    torch.manual_seed(options.seed)
    module.to(device).train()
    weights = list(module.weights.parameters())
    ranges = [p for p in module.ranges.parameters() if p.requires_grad]
    groups = [{"params": weights, "lr": options.lr, "weight_decay": options.weight_decay}]
    if ranges:
        groups.append({"params": ranges, "lr": options.range_lr, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups)
    per_epoch = _steps_per_epoch(data, options.batch_size)
    total = per_epoch * options.epochs if per_epoch else None
    if options.max_steps:
        total = min(total, options.max_steps) if total else options.max_steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / total, 1.0))) if total else 1.0)
    log = TrainLog(device=str(device))
    start = time.perf_counter()
    for epoch in range(options.epochs):
        seen, running = 0, 0.0
        for inputs, labels in _batches(data, options, epoch):
            x, y = to_device(inputs, device), to_device(labels, device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(call(module, x), y)
            if not torch.isfinite(loss):
                raise DataError(f"model {module.model_name!r}: QAT loss became {loss.item()} at step {log.steps}; "
                                "lower the learning rate")
            loss.backward()
            opt.step()
            sched.step()
            log.losses.append(float(loss.detach()))
            n = len(y)
            seen, running, log.steps = seen + n, running + float(loss.detach()) * n, log.steps + 1
            if options.max_steps and log.steps >= options.max_steps:
                break
        log.epoch_loss.append(running / max(seen, 1))
        if options.max_steps and log.steps >= options.max_steps:
            break
    log.seconds = time.perf_counter() - start
    module.eval()
    return log


def predict(module: QDQModule, data: DataSet, batch_size: int = 500) -> np.ndarray:
    """The first output of the fake-quantized model over ``data``, as a numpy array."""
    device = next(module.parameters()).device
    module.eval()
    chunks = []
    with torch.no_grad():
        for inputs, _ in dataset_batches(_with_dummy_labels(data), batch_size, None):
            out = call(module, to_device(inputs, device))
            chunks.append((out[0] if isinstance(out, tuple) else out).float().cpu().numpy())
    return np.concatenate(chunks)


def _with_dummy_labels(data: DataSet) -> DataSet:
    if data.labels is not None:
        return data
    return DataSet(data.inputs, np.zeros(len(data), np.int64), data.source)


def accuracy(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Top-1 accuracy (None without labels)."""
    return None if labels is None else float(np.mean(logits.argmax(axis=1) == np.asarray(labels)))
