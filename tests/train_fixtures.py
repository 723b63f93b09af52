"""Tiny training inputs for tests and benchmarks: real safetensors clips, clips.csv and folds.csv.

Fake clips carry a bright moving square, real ones do not, so a model can learn something in one epoch.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import polars as pl
import torch
import yaml
from safetensors.torch import save_file

from fvc.core.config import ModelSpec

ROOT = Path(__file__).resolve().parents[1]


def make_clip(rng: np.random.Generator, label: int, num_frames: int, size: int) -> np.ndarray:
    """uint8 [T, H, W, 3] noise, plus a moving bright square when `label` is 1."""
    frames = rng.integers(0, 160, size=(num_frames, size, size, 3), dtype=np.uint8)
    if label:
        side = max(2, size // 4)
        for t in range(num_frames):
            x = (t * 2) % (size - side)
            frames[t, x : x + side, x : x + side] = 250
    return frames


def save_clip(
    root: Path, rel: str, frames: torch.Tensor, video_id: str, label: int, aug: int, seed: int
) -> dict:
    """Write one uint8 [T, H, W, 3] clip at `root/rel` as the augment stage does; return its clips.csv row
    (group g<seed>)."""
    save_file(
        {"frames": frames},
        str(root / rel),
        metadata={"video_id": video_id, "aug_idx": str(aug), "seed": str(seed)},
    )
    num_frames, height, width = frames.shape[:3]
    return {
        "clip_path": rel,
        "label": label,
        "group": f"g{seed}",
        "original_video": video_id,
        "aug_idx": aug,
        "seed": seed,
        "num_frames": num_frames,
        "height": height,
        "width": width,
    }


def write_dataset(
    root: Path,
    videos: int = 12,
    augmentations: int = 1,
    k: int = 3,
    num_frames: int = 8,
    size: int = 32,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Clips under `root/clips`, `root/clips.csv` (paths relative to `root`) and `root/folds.csv` (every
    video in cv, fold = index % k, labels alternating). Returns (clips_csv, folds_csv)."""
    rng = np.random.default_rng(seed)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    clips, folds = [], []
    for v in range(videos):
        video_id, label = f"v{v:03d}.mp4", v % 2
        folds.append(
            {"video_id": video_id, "group": f"g{v}", "label": label, "split": "cv", "fold": (v // 2) % k}
        )
        for aug in range(augmentations + 1):
            frames = torch.from_numpy(make_clip(rng, label, num_frames, size))
            rel = f"clips/v{v:03d}_{aug}.safetensors"
            clips.append(save_clip(root, rel, frames, video_id, label, aug, v))
    pl.DataFrame(clips).write_csv(root / "clips.csv")
    pl.DataFrame(folds).write_csv(root / "folds.csv")
    return root / "clips.csv", root / "folds.csv"


def tiny_params(name: str) -> dict:
    """Model params small enough for a test."""
    vit = {
        "vit": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    }
    return {
        "logistic_regression": {"pool": 4},
        "svm": {"pool": 4},
        "naive_cnn": {"widths": [4, 8]},
        "vit_gru": {**vit, "gru_hidden": 16},
        "vit_transformer": {**vit, "temporal_heads": 2},
        "slowfast": {"width": 8, "beta_inv": 4, "depths": [1, 1, 1, 1]},
        "x3d": {"width": 4, "depths": [1, 1, 1, 1], "head_dim": 16},
    }[name]


def tiny_spec(
    name: str, epochs: int = 1, num_frames: int = 4, size: int = 32, **changes: object
) -> ModelSpec:
    """A ModelSpec for tests: batch 2 x accumulation 2, tiny params."""
    row = {
        "batch_size": 2,
        "grad_accum_steps": 2,
        "num_frames": num_frames,
        "size": size,
        "epochs": epochs,
        "lr": 0.01,
        "mem_mb": 1000,
        "runtime": 10,
        "infer_mem_mb": 1000,
        "num_workers": 0,
        "params": tiny_params(name),
    }
    row.update(changes)
    return ModelSpec(name=name, **row)


def write_config(path: Path, spec: ModelSpec, seed: int = 1234) -> Path:
    """The project's config.yaml with `spec` as the only trained model's row."""
    config = copy.deepcopy(yaml.safe_load((ROOT / "config.yaml").read_text()))
    row = {k: v for k, v in spec.__dict__.items() if k != "name"}
    config["models"][spec.name] = row
    config["train"].update(models=[spec.name], effective_batch=spec.effective_batch)
    config["seed"] = seed
    path.write_text(yaml.safe_dump(config))
    return path
