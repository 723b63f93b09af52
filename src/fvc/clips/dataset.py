"""Clips for training: a Dataset that reads one safetensors clip per item, only the frames it needs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch.utils.data import Dataset

from fvc.weights.safetensors_io import LoadError, read_header


def frame_indices(total: int, num_frames: int) -> list[int]:
    """`num_frames` indices spread evenly over `total` frames (first and last included)."""
    if num_frames > total:
        raise ValueError(f"cannot take {num_frames} frames from a clip of {total}")
    return [int(i) for i in np.linspace(0, total - 1, num_frames).round()]


def load_clip_tensor(path: str | os.PathLike[str], num_frames: int, size: int) -> torch.Tensor:
    """The clip file at `path` as a model input: only the `num_frames` frames it needs are read, resized to
    `size`: uint8 `[T, 3, size, size]`. A damaged file raises LoadError naming it."""
    tensors, _ = read_header(path)
    frames_info = tensors.get("frames")
    if frames_info is None:
        raise LoadError(f"clip {path}: no tensor 'frames' (has {sorted(tensors)})")
    shape = frames_info.shape
    if len(shape) != 4 or shape[3] != 3 or frames_info.dtype != "U8":
        raise LoadError(
            f"clip {path}: 'frames' must be uint8 [T, H, W, 3], got {frames_info.dtype} {list(shape)}"
        )
    try:
        with safe_open(str(path), framework="pt") as fh:
            frames = fh.get_slice("frames")
            clip = torch.cat([frames[i : i + 1] for i in frame_indices(shape[0], num_frames)])
    except (OSError, SafetensorError) as exc:
        raise LoadError(f"clip {path}: cannot read ({exc})") from exc
    clip = clip.permute(0, 3, 1, 2)
    if clip.shape[-2:] != (size, size):
        resized = F.interpolate(
            clip.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        clip = resized.round_().clamp_(0, 255).to(torch.uint8)
    return clip.contiguous()


class ClipDataset(Dataset):
    """clips.csv rows -> (uint8 clip `[T, 3, size, size]`, float label); `clip_path` relative to `root`."""

    def __init__(
        self, rows: pl.DataFrame, num_frames: int, size: int, root: str | os.PathLike[str] = "."
    ) -> None:
        self.paths = [Path(root) / p for p in rows["clip_path"].to_list()]
        self.labels = torch.tensor(rows["label"].to_list(), dtype=torch.float32)
        self.num_frames = num_frames
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return load_clip_tensor(self.paths[index], self.num_frames, self.size), self.labels[index]
