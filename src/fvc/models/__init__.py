"""The model zoo: a registry of builders, one module per family. See `fvc.models.base` for the contract
(input `[B, T, 3, H, W]` float in [0, 1], one logit per clip, the loss each model trains with)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fvc.core.config import MODEL_NAMES
from fvc.models.base import ClipClassifier, scale_clips
from fvc.models.cnn import NaiveCNN
from fvc.models.freezing import FreezingError, check_trainable, non_persistent_buffers, trainable_report
from fvc.models.linear import LinearSVM, LogisticRegression
from fvc.models.slowfast import SlowFast
from fvc.models.vit import ViTGRU, ViTTransformer
from fvc.models.x3d import X3D

# Each builder is called as `builder(num_frames, size, **params)`: its keyword-only arguments are the model's
# params (with their defaults), mirrored by the model's params schema in fvc/core/config.schema.yaml.
BUILDERS: dict[str, Callable[..., ClipClassifier]] = {
    "logistic_regression": LogisticRegression,
    "svm": LinearSVM,
    "naive_cnn": NaiveCNN,
    "vit_gru": ViTGRU,
    "vit_transformer": ViTTransformer,
    "slowfast": SlowFast,
    "x3d": X3D,
}
assert tuple(BUILDERS) == MODEL_NAMES

__all__ = [
    "BUILDERS",
    "MODEL_NAMES",
    "ClipClassifier",
    "FreezingError",
    "build_model",
    "check_trainable",
    "export_config",
    "non_persistent_buffers",
    "scale_clips",
    "trainable_report",
]


def build_model(name: str, params: dict[str, Any] | None, num_frames: int, size: int) -> ClipClassifier:
    """Build model `name` for clips of `num_frames` frames of `size` x `size`. Works under
    `with torch.device("meta")` (parameters and persistent buffers only, filled by loading a state dict)."""
    if name not in BUILDERS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    return BUILDERS[name](num_frames, size, **(params or {}))


def export_config(name: str, model: ClipClassifier) -> dict[str, Any]:
    """What `build_model` needs to rebuild `model` (the JSON config written next to an export)."""
    return {
        "model": name,
        "params": model.export_params(),
        "num_frames": model.num_frames,
        "size": model.size,
    }
