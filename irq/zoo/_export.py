"""One way to export the zoo's PyTorch models: TorchScript exporter, opset 17, dynamic axes."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

OPSET = 17


def export_onnx(model: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path,
                inputs: list[str], outputs: list[str], dynamic_axes: dict[str, dict[int, str]]) -> None:
    """Export ``model`` (in eval mode) to ``path`` with ``torch.onnx.export(dynamo=False)``.

    The TorchScript exporter folds BatchNorm into the convolution before it and writes one
    self-contained file. Its deprecation notice and tracer warnings are expected here and
    silenced; anything else still shows.
    """
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        # Transformers' mask code branches on shapes (fixed at trace time, always the same
        # branch for a padding mask) and its boolean indexing exports as several ops.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(model.eval(), args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=inputs, output_names=outputs, dynamic_axes=dynamic_axes)
