"""naive_cnn: a small 2-D CNN applied to every frame, its features averaged over time."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fvc.models.base import ClipClassifier


class NaiveCNN(ClipClassifier):
    """Per frame: [conv 3x3, BN, ReLU, max-pool 2] per width; global average over space and time; linear.

    params: `widths` (default [16, 32, 64]).
    """

    def __init__(self, num_frames: int, size: int, *, widths: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__({"widths": [int(w) for w in widths]}, num_frames, size)
        blocks, channels = [], 3
        for width in self.params["widths"]:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
            )
            channels = width
        self.features = nn.ModuleList(blocks)
        self.head = nn.Linear(channels, 1)
        self.trainable = {"features": True, "head": True}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        b, t = x.shape[:2]
        h = self.run_blocks(self.features, x.flatten(0, 1) - 0.5)
        h = h.mean(dim=(2, 3)).reshape(b, t, -1).mean(dim=1)
        return self.head(h).squeeze(-1)
