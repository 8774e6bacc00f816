"""EfficientNet-Lite1/2 from their PyPI state dicts, reusing irq's Lite0 blocks.

Lite1 and Lite2 scale depth (more blocks per stage) and width (Lite2's channels) and take larger
images (240, 260); the stem (32) and head (1280) do not scale. The block layout is read off
the state dict: each block's channels and kernel from its weights, its stride from the stage
it opens (a stage starts where the output channels change; strides 1,2,2,2,1,2,1 as in Lite0).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from irq.zoo.efficientnet_lite import BN_EPS, MBConvBlock, SameConv2d

STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
SIZES = {"lite1": 240, "lite2": 260}


class EfficientNetLite(nn.Module):
    """Any EfficientNet-Lite described by a lukemelas-style state dict."""

    def __init__(self, state: dict[str, torch.Tensor], image_size: int) -> None:
        super().__init__()
        stem = state["_conv_stem.weight"].shape[0]
        self._conv_stem = SameConv2d(3, stem, 3, 2, image_size)
        self._bn0 = nn.BatchNorm2d(stem, eps=BN_EPS)
        size, cin, stage, blocks = self._conv_stem.out_size, stem, -1, []
        count = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\.", k)))
        for i in range(count):
            dw = state[f"_blocks.{i}._depthwise_conv.weight"]
            cout = state[f"_blocks.{i}._project_conv.weight"].shape[0]
            expand = dw.shape[0] // cin
            opens = i == 0 or cout != cin
            stage += int(opens)
            block = MBConvBlock(cin, cout, dw.shape[-1], STAGE_STRIDES[stage] if opens else 1, expand, size)
            size, cin = block.out_size, cout
            blocks.append(block)
        self._blocks = nn.ModuleList(blocks)
        head = state["_conv_head.weight"].shape[0]
        self._conv_head = SameConv2d(cin, head, 1, 1, size)
        self._bn1 = nn.BatchNorm2d(head, eps=BN_EPS)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(head, state["_fc.weight"].shape[0])
        self.load_state_dict(state, strict=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits for (x - 127) / 128 normalised RGB."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(self._avg_pooling(x).flatten(1)))


def export(weights: Path, variant: str, out: Path) -> Path:
    """Build the network from ``weights`` and export it to ONNX at ``out`` (once)."""
    if out.exists():
        return out
    from irq.zoo._export import export_onnx

    size = SIZES[variant]
    model = EfficientNetLite(torch.load(weights, weights_only=True, map_location="cpu"), size).eval()
    tmp = out.with_name(out.name + ".part")
    export_onnx(model, (torch.zeros(1, 3, size, size),), tmp, ["input"], ["logits"],
                {"input": {0: "N"}, "logits": {0: "N"}})
    tmp.replace(out)
    return out
