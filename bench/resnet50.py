"""A ResNet-50-shaped network (random weights: for time and memory only) exported to ONNX."""

from __future__ import annotations

from pathlib import Path


def build_resnet50():
    """torchvision's ResNet-50 layout (bottlenecks 3-4-6-3), written out: torchvision does not
    import beside torch 2.13 here."""
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int) -> None:
            super().__init__()
            cout = width * 4
            self.body = nn.Sequential(
                nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            return torch.relu(self.body(x) + self.skip(x))

    layers, cin = [], 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = width * 4
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)).eval()


def export_resnet50(path: Path) -> Path:
    """Write the ONNX file (once)."""
    import onnx
    import torch

    from irq.frontends.torch_module import export_torch

    if not path.exists():
        onnx.save(export_torch(build_resnet50(), torch.randn(1, 3, 224, 224), output_names=["logits"]), str(path))
    return path
