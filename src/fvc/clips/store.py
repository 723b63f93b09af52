"""Clip files: one safetensors tensor `frames` (uint8 [T, H, W, 3]) plus string metadata, written atomically
and byte-reproducibly.

The header comes from fvc's own codec (`fvc.weights.safetensors_io`) with sorted keys, since safetensors
keeps metadata in a hash map whose order changes from process to process: the same clip gives the same bytes
in every run, and stays a plain safetensors file that any safetensors reader loads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from safetensors import safe_open

from fvc.core.atomic import commit_batch, create_temp, disk_space_errors, write_bytes
from fvc.weights.safetensors_io import encode_header, read_header


def encode_clip(frames: np.ndarray, metadata: dict[str, str]) -> bytes:
    """The safetensors bytes of a clip, with a canonical (sorted, compact) header."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"clip frames must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    return encode_header([("frames", "U8", frames.shape)], metadata) + np.ascontiguousarray(frames).tobytes()


def write_clip(path: str | os.PathLike[str], frames: np.ndarray, metadata: dict[str, str]) -> None:
    """Write a clip atomically: a reader (or a resumed run) sees the whole file or none."""
    write_bytes(path, encode_clip(frames, metadata))


class ClipBatch:
    """Clips written together with one round of durability work, e.g. one video's clips: `write` puts each
    clip's bytes in a temporary file next to its path; `commit` fsyncs every file, renames each to its path
    and fsyncs each folder once, so that all of them are durable when it returns: the caller journals them
    after, never before. `discard` (also what a failed `commit` ends with) removes the temporary files (a
    killed run's are stale temps for `remove_stale_temps`); a clip renamed before an error is unjournalled,
    so it is simply made again."""

    def __init__(self) -> None:
        self._pending: list[tuple[int, Path, Path]] = []  # open fd, temporary file, final path

    def write(self, path: str | os.PathLike[str], frames: np.ndarray, metadata: dict[str, str]) -> None:
        """Write one clip's bytes to its temporary file (not yet durable, not yet at `path`)."""
        final = Path(path)
        data = memoryview(encode_clip(frames, metadata))
        with disk_space_errors(final.parent, len(data)):
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = create_temp(final)
            try:
                fd = os.open(tmp, os.O_WRONLY)
            except OSError:
                tmp.unlink(missing_ok=True)
                raise
            self._pending.append((fd, tmp, final))
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])

    def commit(self) -> None:
        """Make every clip written so far durable at its path: fsync each file, rename it, fsync each folder
        once; then close them (see `discard`)."""
        try:
            commit_batch(self._pending)
        finally:
            self.discard()

    def discard(self) -> None:
        """Close the temporary files and remove those not yet renamed to their paths."""
        for fd, tmp, _ in self._pending:
            os.close(fd)
            tmp.unlink(missing_ok=True)
        self._pending = []


def read_clip(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, str]]:
    """A clip's frames (uint8 [T, H, W, 3]) and metadata; LoadError naming the file if it is damaged."""
    read_header(path)
    with safe_open(str(path), framework="np") as fh:
        return fh.get_tensor("frames"), dict(fh.metadata() or {})
