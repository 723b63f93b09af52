"""Frame-exact sparse decoding: read only the frames asked for, with memory proportional to their number.

Frame `i` is the i-th frame in presentation order, exactly as a plain sequential decode numbers it. Indices
map to timestamps through a table of packet timestamps built by demuxing (packets only, nothing decoded):
sorted pts = presentation order, which holds for B-frames, variable frame rates and containers (WebM/MKV)
that report no frame count. Targets are decoded in one forward pass; the reader seeks (to the keyframe at
or before a target) only when that keyframe lies beyond the last decoded frame, and keeps decoded frames
only when their pts equals a target's pts. When seeking fails or the timestamps cannot be trusted, it falls
back, with a warning, to a sequential decode of the frames up to the last one needed.

Decoder memory grows with its thread count (each frame thread holds pictures in flight: about 6 MB per
thread at 1080p), so the count is set explicitly rather than left to FFmpeg's one per core, which would make
memory depend on the node a job lands on.
"""

from __future__ import annotations

import os
import warnings
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from fvc.core.errors import FvcError

Size = int | tuple[int, int]
DECODE_THREADS = 2


class VideoReadError(FvcError, ValueError):
    """A video that cannot be read; the message names the file."""


@dataclass(frozen=True)
class FrameTable:
    """Presentation timestamps of every frame (sorted) and of the keyframes, in the stream's time base."""

    pts: np.ndarray
    keyframes: np.ndarray

    def __len__(self) -> int:
        return len(self.pts)


@dataclass
class DecodeStats:
    """What a sparse read cost: frames decoded (kept or dropped), seeks, and whether it fell back."""

    frames_returned: int = 0
    frames_decoded: int = 0
    seeks: int = 0
    sequential_fallback: bool = False


class _SeekFailed(Exception):
    """Decoding after a seek did not reach the target frame's timestamp."""


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise VideoReadError(f"{path}: no such file")
    try:
        return av.open(str(path))
    except av.FFmpegError as exc:
        raise VideoReadError(f"{path}: not a readable media file ({exc})") from exc


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise VideoReadError(f"{path}: no video stream")
    return container.streams.video[0]


def _demux_table(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> FrameTable | None:
    """The frame table from the stream's packets (no decoding); None when some packet has no pts or two
    frames share one, so that timestamps cannot identify frames."""
    pts, keys = array("q"), array("q")
    for packet in container.demux(stream):
        if packet.size == 0 or packet.is_discard:
            continue
        if packet.pts is None:
            return None
        pts.append(packet.pts)
        if packet.is_keyframe:
            keys.append(packet.pts)
    table = FrameTable(np.sort(np.frombuffer(pts, np.int64)), np.sort(np.frombuffer(keys, np.int64)))
    if len(table) and np.any(np.diff(table.pts) == 0):
        return None
    return table


def frame_table(path: str | os.PathLike[str]) -> FrameTable | None:
    """Demux `path` (no decoding) into its frame table; None when packet timestamps cannot identify frames."""
    path = Path(path)
    with _open(path) as container:
        return _demux_table(container, _video_stream(container, path))


def count_frames(path: str | os.PathLike[str]) -> int:
    """Frames of `path` counted as its video packets (demux only, no decoding)."""
    path = Path(path)
    with _open(path) as container:
        packets = container.demux(_video_stream(container, path))
        return sum(1 for packet in packets if packet.size and not packet.is_discard)


def _dims(size: Size | None) -> dict[str, int]:
    if size is None:
        return {}
    width, height = (size, size) if isinstance(size, int) else size
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return {"width": int(width), "height": int(height)}


def _indices(path: Path, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    wanted = np.asarray(indices)
    if wanted.ndim != 1 or (wanted.size and not np.issubdtype(wanted.dtype, np.integer)):
        raise TypeError(f"{path}: frame indices must be a 1-D sequence of integers, got {indices!r}")
    return wanted.astype(np.int64)


def _out_of_range(path: Path, index: int, count: int) -> IndexError:
    return IndexError(
        f"{path}: frame index {index} is out of range: the video has {count} frames (0..{count - 1})"
    )


class _Output:
    """The result array, allocated at the first decoded frame; each distinct index is converted once and
    copied into every row that asked for it."""

    def __init__(self, wanted: np.ndarray, dims: dict[str, int]) -> None:
        self.targets, inverse = np.unique(wanted, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        self.rows = np.split(order, np.cumsum(np.bincount(inverse, minlength=len(self.targets)))[:-1])
        self.count = len(wanted)
        self.dims: dict[str, Any] = dims  # width and height keywords of `to_ndarray`
        self.array: np.ndarray | None = None

    def put(self, k: int, frame: av.VideoFrame) -> None:
        image = frame.to_ndarray(format="rgb24", **self.dims)
        if self.array is None:
            self.array = np.empty((self.count, *image.shape), np.uint8)
        self.array[self.rows[k]] = image

    def result(self) -> np.ndarray:
        """The filled array (a decode pass puts every wanted frame)."""
        assert self.array is not None, "no frame was decoded"
        return self.array


def _decoder_stream(
    container: av.container.InputContainer, path: Path, threads: int
) -> av.video.stream.VideoStream:
    """The first video stream, set to decode with `threads` threads (frame or slice threading)."""
    stream = _video_stream(container, path)
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads
    return stream


def _frames_from(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, seek_pts: int | None
) -> Iterator[av.VideoFrame]:
    """Decoded frames from the start, or from the keyframe at or before `seek_pts`."""
    if seek_pts is not None:
        try:
            container.seek(int(seek_pts), stream=stream, backward=True, any_frame=False)
        except av.FFmpegError as exc:
            raise _SeekFailed(f"seek to pts {seek_pts} failed: {exc}") from exc
    for packet in container.demux(stream):
        yield from packet.decode()


def _sparse_pass(path: Path, table: FrameTable, out: _Output, stats: DecodeStats, threads: int) -> None:
    """One forward pass over the targets, seeking only when the target's keyframe lies past the decoder."""
    target_pts = table.pts[out.targets]
    with _open(path) as container:
        stream = _decoder_stream(container, path, threads)
        frames: Iterator[av.VideoFrame] | None = None
        last_pts: int | None = None
        for k, target in enumerate(target_pts):
            before = np.searchsorted(table.keyframes, target, side="right")
            key = int(table.keyframes[before - 1]) if before else None
            if frames is None or (key is not None and last_pts is not None and key > last_pts):
                seek = None if key is None or (frames is None and key <= table.pts[0]) else key
                stats.seeks += seek is not None
                frames = _frames_from(container, stream, seek)
            for frame in frames:
                stats.frames_decoded += 1
                if frame.pts is None:
                    raise _SeekFailed("a decoded frame has no pts")
                last_pts = frame.pts
                if frame.pts == target:
                    out.put(k, frame)
                    break
                if frame.pts > target:
                    raise _SeekFailed(f"decoding reached pts {frame.pts} past target pts {target}")
            else:
                raise _SeekFailed(f"the stream ended before target pts {target}")


def _sequential_pass(path: Path, out: _Output, stats: DecodeStats, threads: int) -> None:
    """Decode from the start up to the last target, numbering frames in decode output order."""
    last = int(out.targets[-1])
    k = 0
    with _open(path) as container:
        stream = _decoder_stream(container, path, threads)
        for i, frame in enumerate(container.decode(stream)):
            stats.frames_decoded += 1
            if i == out.targets[k]:
                out.put(k, frame)
                k += 1
                if i == last:
                    return
    raise _out_of_range(path, last, stats.frames_decoded)


def decode_frames(
    path: str | os.PathLike[str],
    indices: Sequence[int] | np.ndarray,
    size: Size | None = None,
    threads: int = DECODE_THREADS,
    table: FrameTable | None = None,
) -> tuple[np.ndarray, DecodeStats]:
    """`read_frames` that also returns what the read cost (frames decoded, seeks, fallback)."""
    path = Path(path)
    wanted = _indices(path, indices)
    dims = _dims(size)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(
            f"threads must be an integer >= 1, got {threads!r} (FFmpeg's automatic count, one per core, "
            "would make decoder memory depend on the node)"
        )
    stats = DecodeStats(frames_returned=len(wanted))
    with _open(path) as container:
        stream = _video_stream(container, path)
        shape = (dims.get("height", stream.height), dims.get("width", stream.width))
        if table is None:
            table = _demux_table(container, stream)
        count = len(table) if table is not None else stream.frames
    if wanted.size == 0:
        return np.empty((0, *shape, 3), np.uint8), stats
    if wanted.min() < 0:
        raise _out_of_range(path, int(wanted.min()), count)
    if table is not None and wanted.max() >= count:
        raise _out_of_range(path, int(wanted.max()), count)
    out = _Output(wanted, dims)
    reason = "packet timestamps do not identify frames"
    if table is not None:
        try:
            _sparse_pass(path, table, out, stats, threads)
            return out.result(), stats
        except _SeekFailed as exc:
            reason = str(exc)
        except av.FFmpegError as exc:
            reason = f"decoding after a seek failed: {exc}"
    warnings.warn(
        f"{path}: sparse decoding failed ({reason}); decoding sequentially up to frame {out.targets[-1]}",
        RuntimeWarning,
        stacklevel=2,
    )
    stats.sequential_fallback = True
    out.array = None
    try:
        _sequential_pass(path, out, stats, threads)
    except av.FFmpegError as exc:
        raise VideoReadError(f"{path}: decoding failed ({exc})") from exc
    return out.result(), stats


def read_frames(
    path: str | os.PathLike[str],
    indices: Sequence[int] | np.ndarray,
    size: Size | None = None,
    threads: int = DECODE_THREADS,
    table: FrameTable | None = None,
) -> np.ndarray:
    """The frames at `indices` (presentation order, 0-based; any order, repeats allowed) as RGB uint8
    [T, H, W, 3], in the order asked. `size` resizes each frame as it is decoded: an int for size x size, or
    (width, height). `threads`: decoder threads (its memory grows with them). `table`: this file's
    `frame_table`, so that several reads of one video demux it once. Raises IndexError naming the file, index
    and frame count for an index out of range, and VideoReadError for a file that is missing, not media,
    without a video stream, or that fails to decode."""
    return decode_frames(path, indices, size, threads, table)[0]
