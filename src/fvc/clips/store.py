"""Clip files: one safetensors tensor `frames` (uint8 [T, H, W, 3]) plus string metadata, written atomically
and byte-reproducibly.

safetensors keeps metadata in a hash map whose order changes from process to process, so the header is
re-serialised with sorted keys: the same clip gives the same bytes in every run, and stays a plain
safetensors file that any safetensors reader loads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save

ALIGN = 8  # safetensors pads its header so that the data starts 8-byte aligned


def encode_clip(frames: np.ndarray, metadata: dict[str, str]) -> bytes:
    """The safetensors bytes of a clip, with a canonical (sorted, compact) header."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"clip frames must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    raw = save({"frames": np.ascontiguousarray(frames)}, metadata=metadata)
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % ALIGN)
    return len(text).to_bytes(8, "little") + text + raw[8 + length :]


def write_clip(path: str | os.PathLike[str], frames: np.ndarray, metadata: dict[str, str]) -> None:
    """Write a clip to a temporary name in its folder, fsync it, then rename it into place: a reader (or a
    resumed run) sees the whole file or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(encode_clip(frames, metadata))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_clip(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, str]]:
    """A clip's frames (uint8 [T, H, W, 3]) and metadata."""
    with safe_open(str(path), framework="np") as fh:
        return fh.get_tensor("frames"), dict(fh.metadata() or {})
