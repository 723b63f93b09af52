"""The base of every clip classifier: input layout, output, loss, trainable components, checkpointing flag.

Contract for all models:

- input: float clips `[B, T, 3, H, W]` in [0, 1] (`scale_clips` turns the uint8 clips of the data loader into
  this, the one place where uint8 -> float happens);
- output: one logit per clip, `[B]`, 1 = fake. `sigmoid(logit)` is the fake score for metrics and inference;
- `loss` names the training loss ("bce": binary cross-entropy on the logit; "hinge": the linear SVM's hinge
  loss on the margin with targets -1/+1);
- `trainable` declares, per top-level component (child module), whether its parameters must be trainable:
  True, False, or the names (inside the component) of the only submodules that train, e.g.
  `("layers.11", "layernorm")` for a frozen backbone with its last block unfrozen;
  `fvc.models.freezing.check_trainable` enforces it against `requires_grad`;
- a model with a pretrained (frozen) component lists that component's blocks in `backbone_blocks` and what
  follows them in `backbone_tail`, so `fvc.models.freezing.unfreeze_last_blocks` can train its last N blocks;
- only persistent buffers, so a module built on the meta device is complete once its state dict is loaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def scale_clips(clips: torch.Tensor) -> torch.Tensor:
    """uint8 clips `[B, T, 3, H, W]` -> float32 in [0, 1] (the only uint8 -> float conversion)."""
    if clips.dtype != torch.uint8:
        raise TypeError(f"clips must be uint8, got {clips.dtype}")
    return clips.float().div_(255.0)


class ClipClassifier(nn.Module):
    """Common behaviour; subclasses set `loss`, `trainable` and implement `forward`."""

    loss: str = "bce"

    def __init__(self, params: dict[str, Any], num_frames: int, size: int) -> None:
        super().__init__()
        self.params = dict(params)
        self.num_frames = num_frames
        self.size = size
        self.gradient_checkpointing = False
        self.trainable: dict[str, bool | tuple[str, ...]] = {}

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute activations of the heavy blocks in the backward pass instead of keeping them."""
        self.gradient_checkpointing = enabled

    def run_blocks(self, blocks: Iterable[nn.Module], x: torch.Tensor) -> torch.Tensor:
        """Apply `blocks` in order, checkpointing each one when enabled and training."""
        for block in blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x

    def backbone_blocks(self) -> list[str]:
        """Qualified names of the frozen component's blocks in forward order (the last is nearest the head);
        empty for a model without a pretrained backbone."""
        return []

    def backbone_tail(self) -> list[str]:
        """Qualified names of the frozen component's modules after its last block (e.g. a final norm): they
        train whenever any block does."""
        return []

    def keep_frozen_in_eval(self, component: str, mode: bool) -> None:
        """After `train(mode)`: a frozen `component` stays in eval mode (its BatchNorm statistics are the
        pretrained ones); its unfrozen blocks (a tuple declaration in `trainable`) follow `mode`."""
        declared = self.trainable.get(component)
        if declared is True:
            return
        module = self.get_submodule(component)
        module.eval()
        for name in declared or ():
            module.get_submodule(name).train(mode)

    def export_params(self) -> dict[str, Any]:
        """The params that rebuild this module with `build_model` (no external files needed)."""
        return dict(self.params)

    def loss_fn(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean training loss of `[B]` logits against `[B]` labels in {0, 1}."""
        logits = logits.float()
        labels = labels.float()
        if self.loss == "hinge":
            return torch.clamp(1.0 - (2.0 * labels - 1.0) * logits, min=0.0).mean()
        return F.binary_cross_entropy_with_logits(logits, labels)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for a batch that does not match the model's clip shape."""
        if x.ndim != 5 or x.shape[1:] != (self.num_frames, 3, self.size, self.size):
            raise ValueError(
                f"{type(self).__name__} expects clips [B, {self.num_frames}, 3, {self.size}, {self.size}], "
                f"got {list(x.shape)}"
            )
