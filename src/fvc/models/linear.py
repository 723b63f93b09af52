"""Linear baselines on pooled pixels: logistic regression (BCE) and a linear SVM (hinge loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fvc.models.base import ClipClassifier


class LinearClip(ClipClassifier):
    """Average-pool every frame to `pool x pool` per channel, flatten the clip, one linear layer.

    params: `pool` (default 8).
    """

    def __init__(self, num_frames: int, size: int, *, pool: int = 8) -> None:
        super().__init__({"pool": pool}, num_frames, size)
        self.pool = int(pool)
        self.head = nn.Linear(num_frames * 3 * self.pool * self.pool, 1)
        self.trainable = {"head": True}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        b, t = x.shape[:2]
        pooled = F.adaptive_avg_pool2d(x.flatten(0, 1), self.pool).reshape(b, -1)
        return self.head(pooled - 0.5).squeeze(-1)


class LogisticRegression(LinearClip):
    """Logistic regression: linear logit, binary cross-entropy."""

    loss = "bce"


class LinearSVM(LinearClip):
    """Linear SVM: linear margin, hinge loss (L2 regularisation comes from the optimizer's weight decay)."""

    loss = "hinge"
