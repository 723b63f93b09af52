"""SlowFast (Feichtenhofer et al. 2019), compact: a Slow pathway (T/alpha frames, wide) and a Fast pathway
(all T frames, channels / beta_inv) of 3-D ResNet bottlenecks, fused after the stem and every stage but the
last by time-strided lateral convolutions (Fast -> Slow, concatenated), then pooled, concatenated, linear.

params: `alpha` (default 4), `beta_inv` (8), `width` (Slow stem channels, 16), `depths` (blocks per stage,
[1, 1, 1, 1]), `fusion_kernel` (5), `dropout` (0.5). Temporal kernels follow the paper: Slow uses 1 in
res2/res3 and 3 in res4/res5, Fast uses 3 everywhere. Every temporal kernel is clamped to its pathway's
frame count (`temporal_kernel`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fvc.models.base import ClipClassifier


def temporal_kernel(kernel: int, frames: int) -> int:
    """`kernel` clamped to the largest odd size <= `frames`. A longer kernel only adds zero padding, and
    oneDNN's bf16 Conv3d weight gradient is NaN when the kernel is longer than the input (torch 2.13, CPU)."""
    return max(1, min(kernel, frames if frames % 2 else frames - 1))


def conv_bn(
    cin: int,
    cout: int,
    kernel: tuple[int, int, int],
    stride: tuple[int, int, int] = (1, 1, 1),
    groups: int = 1,
    relu: bool = True,
) -> nn.Sequential:
    """Conv3d ('same' padding) + BatchNorm3d (+ ReLU)."""
    pad = (kernel[0] // 2, kernel[1] // 2, kernel[2] // 2)
    layers: list[nn.Module] = [
        nn.Conv3d(cin, cout, kernel, stride, pad, groups=groups, bias=False),
        nn.BatchNorm3d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """`relu(body(x) + shortcut(x))`, the shortcut a strided 1x1x1 projection when the shape changes."""

    def __init__(self, body: nn.Module, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = body
        self.shortcut = (
            nn.Identity()
            if cin == cout and stride == 1
            else conv_bn(cin, cout, (1, 1, 1), (1, stride, stride), relu=False)
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class Bottleneck(Residual):
    """3-D ResNet bottleneck: (kt x 1 x 1) -> (1 x 3 x 3, spatial stride) -> (1 x 1 x 1), residual."""

    def __init__(self, cin: int, inner: int, cout: int, kt: int, stride: int) -> None:
        body = nn.Sequential(
            conv_bn(cin, inner, (kt, 1, 1)),
            conv_bn(inner, inner, (1, 3, 3), (1, stride, stride)),
            conv_bn(inner, cout, (1, 1, 1), relu=False),
        )
        super().__init__(body, cin, cout, stride)


def stage(cin: int, inner: int, cout: int, depth: int, kt: int, stride: int) -> nn.Sequential:
    """`depth` bottlenecks; the first changes width and spatial stride."""
    return nn.Sequential(
        *[Bottleneck(cin if i == 0 else cout, inner, cout, kt, stride if i == 0 else 1) for i in range(depth)]
    )


class SlowFast(ClipClassifier):
    """Two pathways with lateral connections; see the module docstring."""

    def __init__(
        self,
        num_frames: int,
        size: int,
        *,
        alpha: int = 4,
        beta_inv: int = 8,
        width: int = 16,
        depths: Sequence[int] = (1, 1, 1, 1),
        fusion_kernel: int = 5,
        dropout: float = 0.5,
    ) -> None:
        depths = [int(d) for d in depths]
        super().__init__(
            {
                "alpha": alpha,
                "beta_inv": beta_inv,
                "width": width,
                "depths": depths,
                "fusion_kernel": fusion_kernel,
                "dropout": dropout,
            },
            num_frames,
            size,
        )
        self.alpha = int(alpha)
        if num_frames % self.alpha:
            raise ValueError(f"slowfast: num_frames {num_frames} is not a multiple of alpha {self.alpha}")
        fk = temporal_kernel(int(fusion_kernel), num_frames)
        slow_frames = num_frames // self.alpha
        fast_w = max(1, width // beta_inv)

        def stem(kt: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                conv_bn(3, cout, (kt, 7, 7), (1, 2, 2)), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
            )

        def lateral(cin: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv3d(cin, 2 * cin, (fk, 1, 1), (self.alpha, 1, 1), (fk // 2, 0, 0), bias=False),
                nn.BatchNorm3d(2 * cin),
                nn.ReLU(inplace=True),
            )

        self.slow = nn.ModuleList([stem(1, width)])
        self.fast = nn.ModuleList([stem(temporal_kernel(5, num_frames), fast_w)])
        self.lateral = nn.ModuleList([lateral(fast_w)])
        slow_in, fast_in = width + 2 * fast_w, fast_w
        for i, depth in enumerate(depths):
            inner = width * 2**i
            slow_out, fast_inner = 4 * inner, max(1, inner // beta_inv)
            fast_out = 4 * fast_inner
            stride = 1 if i == 0 else 2
            self.slow.append(
                stage(
                    slow_in, inner, slow_out, depth, temporal_kernel(1 if i < 2 else 3, slow_frames), stride
                )
            )
            self.fast.append(
                stage(fast_in, fast_inner, fast_out, depth, temporal_kernel(3, num_frames), stride)
            )
            slow_in, fast_in = slow_out, fast_out
            if i < len(depths) - 1:
                self.lateral.append(lateral(fast_out))
                slow_in += 2 * fast_out
        self.head = nn.Sequential(nn.Dropout(float(dropout)), nn.Linear(slow_in + fast_in, 1))
        self.trainable = {"slow": True, "fast": True, "lateral": True, "head": True}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        fast = (x - 0.5).transpose(1, 2).contiguous()  # [B, 3, T, H, W]
        slow = fast[:, :, :: self.alpha].contiguous()
        for i, (slow_block, fast_block) in enumerate(zip(self.slow, self.fast, strict=True)):
            slow = self.run_blocks([slow_block], slow)
            fast = self.run_blocks([fast_block], fast)
            if i < len(self.lateral):
                slow = torch.cat([slow, self.lateral[i](fast)], dim=1)
        pooled = torch.cat([slow.mean(dim=(2, 3, 4)), fast.mean(dim=(2, 3, 4))], dim=1)
        return self.head(pooled).squeeze(-1)
