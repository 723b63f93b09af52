"""Test helpers for export / lean loading / inference: tiny sets of real test videos and fp16 exports of
registry models."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import polars as pl
import torch
from torch import nn
from train_fixtures import make_clip

from fvc.models import build_model, export_config
from fvc.weights.export import export_fp16


def encode_video(path: Path, frames: np.ndarray, fps: int = 12) -> Path:
    """uint8 `[T, H, W, 3]` frames as an H.264 MP4 at `path` (near-lossless, so pixels stay close)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "1", "preset": "veryfast"})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def write_index(
    index_parquet: Path, labels: dict[str, int], folder: Path, frames: int = 12, size: int = 32
) -> Path:
    """Videos `folder/<video_id>` (noise, fake ones with a moving bright square) and their index."""
    rng = np.random.default_rng(0)
    rows = [
        {
            "video_id": v,
            "path": str(encode_video(folder / v, make_clip(rng, label, frames, size))),
            "frames": frames,
        }
        for v, label in labels.items()
    ]
    index_parquet.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_parquet(index_parquet)
    return index_parquet


def write_test_videos(
    root: Path, videos: int = 8, test: int = 4, frames: int = 12, size: int = 16
) -> tuple[Path, Path]:
    """Real videos under `root/videos`, `index.parquet` (video_id, path relative to `root`, label, group,
    frames) and `folds.csv`: `videos` videos alternating real/fake (fake ones brighter); the first `test`
    are the test split, the others cv fold 0/1. Returns (index, folds)."""
    rng = np.random.default_rng(0)
    index_rows, fold_rows = [], []
    for v in range(videos):
        label, video_id = v % 2, f"{'fake' if v % 2 else 'real'}/v{v}.mp4"
        pixels = rng.integers(0, 128, (frames, size, size, 3), dtype=np.uint8) + np.uint8(100 * label)
        encode_video(root / "videos" / video_id, pixels)
        index_rows.append(
            {
                "video_id": video_id,
                "path": f"videos/{video_id}",
                "label": label,
                "group": f"g{v}",
                "frames": frames,
            }
        )
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
    pl.DataFrame(index_rows).write_parquet(root / "index.parquet")
    pl.DataFrame(fold_rows).write_csv(root / "folds.csv")
    return root / "index.parquet", root / "folds.csv"


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
