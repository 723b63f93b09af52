"""Test helpers for export / lean loading / inference: tiny clip sets and fp16 exports of registry models."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch
from torch import nn
from train_fixtures import save_clip

from fvc.models import build_model, export_config
from fvc.weights.export import export_fp16


def write_clip_set(root: Path, videos: int = 8, test: int = 4, num_frames: int = 4, size: int = 16) -> None:
    """`clips/*.safetensors`, `clips.csv` and `folds.csv` under `root` (paths relative to it): `videos` videos
    alternating real/fake (fake ones brighter), one original and one augmented clip each; the first `test`
    videos are the test split, the others cv fold 0/1."""
    generator = torch.Generator().manual_seed(0)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    clip_rows, fold_rows = [], []
    for v in range(videos):
        label, video_id = v % 2, f"{'fake' if v % 2 else 'real'}/v{v}.mp4"
        for aug in (0, 1):
            shape = (num_frames, size, size, 3)
            frames = torch.randint(0, 128, shape, generator=generator, dtype=torch.uint8) + 100 * label
            rel = f"clips/v{v}_{aug}.safetensors"
            clip_rows.append(save_clip(root, rel, frames, video_id, label, aug, v))
        split = "test" if v < test else "cv"
        fold_rows.append(
            {
                "video_id": video_id,
                "group": f"g{v}",
                "label": label,
                "split": split,
                "fold": -1 if split == "test" else v % 2,
            }
        )
    pl.DataFrame(clip_rows).write_csv(root / "clips.csv")
    pl.DataFrame(fold_rows).write_csv(root / "folds.csv")


def randomize(model: nn.Module, seed: int, std: float = 0.05) -> nn.Module:
    """Fill every floating tensor of `model`'s state dict from a local generator (also after `to_empty`):
    parameters normal(0, std), persistent buffers uniform in [0.5, 1.5] (valid batch-norm statistics)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict(keep_vars=True).values():
            if isinstance(tensor, nn.Parameter):
                tensor.normal_(0.0, std, generator=generator)
            elif tensor.is_floating_point():
                tensor.uniform_(0.5, 1.5, generator=generator)
    return model


def export_folds(
    name: str, params: dict, num_frames: int, size: int, out_dir: Path, folds: int, fast_init: bool = False
) -> tuple[list[Path], list[nn.Module]]:
    """Export `folds` differently randomized fp32 models `name` as `out_dir/fold{i}.safetensors`; returns the
    paths and the in-memory models. `fast_init` skips the module's own init (to_empty) for big models."""
    paths, models = [], []
    for fold in range(folds):
        if fast_init:
            with torch.device("meta"):
                model = build_model(name, params, num_frames, size)
            model.to_empty(device="cpu")
        else:
            model = build_model(name, params, num_frames, size)
        randomize(model, seed=fold).eval()
        path = out_dir / f"fold{fold}.safetensors"
        export_fp16(model, export_config(name, model), path)
        paths.append(path)
        models.append(model)
    return paths, models
