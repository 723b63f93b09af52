"""naive_cnn: a small 2-D CNN applied to every frame, its features averaged over time."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fvc.models.base import ClipClassifier


class NaiveCNN(ClipClassifier):
    """Per frame: [conv 3x3, BN, ReLU, max-pool 2] per width; global average over space and time; linear.

    params: `widths` (default [16, 32, 64]).
    """

    def __init__(self, params: dict[str, Any], num_frames: int, size: int) -> None:
        super().__init__(params, num_frames, size)
        widths = [int(w) for w in params.get("widths", [16, 32, 64])]
        blocks, channels = [], 3
        for width in widths:
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


def naive_cnn(params: dict[str, Any], num_frames: int, size: int) -> ClipClassifier:
    """Build the naive per-frame CNN."""
    return NaiveCNN(params, num_frames, size)
