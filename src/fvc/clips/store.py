"""Clip files: one safetensors tensor `frames` (uint8 [T, H, W, 3]) plus string metadata, written atomically
and byte-reproducibly.

The header comes from fvc's own codec (`fvc.weights.safetensors_io`) with sorted keys, since safetensors
keeps metadata in a hash map whose order changes from process to process: the same clip gives the same bytes
in every run, and stays a plain safetensors file that any safetensors reader loads."""

from __future__ import annotations

import os

import numpy as np
from safetensors import safe_open

from fvc.core.atomic import write_bytes
from fvc.weights.safetensors_io import encode_header, read_header


def encode_clip(frames: np.ndarray, metadata: dict[str, str]) -> bytes:
    """The safetensors bytes of a clip, with a canonical (sorted, compact) header."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"clip frames must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    return encode_header([("frames", "U8", frames.shape)], metadata) + np.ascontiguousarray(frames).tobytes()


def write_clip(path: str | os.PathLike[str], frames: np.ndarray, metadata: dict[str, str]) -> None:
    """Write a clip atomically: a reader (or a resumed run) sees the whole file or none."""
    write_bytes(path, encode_clip(frames, metadata))


def read_clip(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, str]]:
    """A clip's frames (uint8 [T, H, W, 3]) and metadata; LoadError naming the file if it is damaged."""
    read_header(path)
    with safe_open(str(path), framework="np") as fh:
        return fh.get_tensor("frames"), dict(fh.metadata() or {})
