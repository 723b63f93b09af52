"""X3D (Feichtenhofer 2020), compact: a 2-D stem with a depthwise temporal conv, stages of expanded 3-D
bottlenecks (1x1x1 expand -> 3x3x3 depthwise -> squeeze-excitation on every other block -> swish -> 1x1x1
project, residual), a 1x1x1 conv head, pooling and two fully connected layers.

params: `width` (stem/stage-1 channels, default 12), `depths` (blocks per stage, [1, 1, 2, 1]),
`expansion` (2.25), `se_ratio` (0.0625), `fc_dim` (128), `dropout` (0.5). Temporal kernels are clamped to
the clip length (`fvc.models.slowfast.temporal_kernel`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fvc.models.base import ClipClassifier
from fvc.models.slowfast import Residual, conv_bn, temporal_kernel


class SqueezeExcite(nn.Module):
    """Channel attention from the clip's global average."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        hidden = max(8, int(round(channels * ratio)))
        self.fc = nn.Sequential(
            nn.Conv3d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv3d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3, 4), keepdim=True))


class X3DBlock(Residual):
    """Expanded bottleneck with a depthwise 3x3x3 convolution."""

    def __init__(self, cin: int, inner: int, cout: int, kt: int, stride: int, se_ratio: float) -> None:
        body = nn.Sequential(
            conv_bn(cin, inner, (1, 1, 1)),
            conv_bn(inner, inner, (kt, 3, 3), (1, stride, stride), groups=inner, relu=False),
            SqueezeExcite(inner, se_ratio) if se_ratio > 0 else nn.Identity(),
            nn.SiLU(inplace=True),
            conv_bn(inner, cout, (1, 1, 1), relu=False),
        )
        super().__init__(body, cin, cout, stride)


class X3D(ClipClassifier):
    """See the module docstring."""

    def __init__(
        self,
        num_frames: int,
        size: int,
        *,
        width: int = 12,
        depths: Sequence[int] = (1, 1, 2, 1),
        expansion: float = 2.25,
        se_ratio: float = 0.0625,
        fc_dim: int = 128,
        dropout: float = 0.5,
    ) -> None:
        depths = [int(d) for d in depths]
        super().__init__(
            {
                "width": width,
                "depths": depths,
                "expansion": expansion,
                "se_ratio": se_ratio,
                "fc_dim": fc_dim,
                "dropout": dropout,
            },
            num_frames,
            size,
        )
        self.stem = nn.Sequential(
            nn.Conv3d(3, width, (1, 3, 3), (1, 2, 2), (0, 1, 1), bias=False),
            conv_bn(width, width, (temporal_kernel(5, num_frames), 1, 1), groups=width),
        )
        blocks: list[nn.Module] = []
        cin, kt = width, temporal_kernel(3, num_frames)
        for i, depth in enumerate(depths):
            cout = width * 2**i
            inner = int(round(cout * expansion))
            for j in range(depth):
                blocks.append(
                    X3DBlock(cin, inner, cout, kt, 2 if j == 0 else 1, se_ratio if j % 2 == 0 else 0.0)
                )
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        head_dim = int(round(cin * expansion))
        self.head = nn.ModuleDict(
            {
                "conv": conv_bn(cin, head_dim, (1, 1, 1)),
                "fc": nn.Sequential(
                    nn.Linear(head_dim, fc_dim, bias=False),
                    nn.ReLU(inplace=True),
                    nn.Dropout(float(dropout)),
                    nn.Linear(fc_dim, 1),
                ),
            }
        )
        self.trainable = {"stem": True, "blocks": True, "head": True}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        h = self.run_blocks(self.blocks, self.stem((x - 0.5).transpose(1, 2).contiguous()))
        h = self.head["conv"](h).mean(dim=(2, 3, 4))
        return self.head["fc"](h).squeeze(-1)
