"""Frame-exact sparse decoding of a video's main stream, upright: read only the frames asked for, with memory
proportional to their number, through one open of the file.

`VideoReader` opens a file once: it picks the main video stream (`main_video_stream`), demuxes its frame table
(packets only, nothing decoded) unless given one, and then reads any number of frame sets. Frame `i` is the
i-th frame in presentation order, exactly as a plain sequential decode numbers it: sorted packet pts =
presentation order, which holds for B-frames, variable frame rates and containers (WebM/MKV) that report no
frame count. Targets are decoded in one forward pass; the reader seeks (to the keyframe at or before a
target) only when that keyframe lies beyond the last decoded frame, and keeps decoded frames only when their
pts equals a target's pts. While it decodes from the start it checks each frame's pts against the table;
when they disagree (e.g. H.264 with B-frames in AVI) it goes on decoding sequentially from where it is, so
that it never decodes more frames than the last one asked for. When a seek fails it falls back, with a
warning, to a sequential decode up to the last frame needed.

Frames come out as a person sees them: a display matrix (phone videos) rotates each decoded frame by its
`rotation` (90/180/270 degrees), and `size` is the displayed (width, height).

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
from types import TracebackType
from typing import Any

import av
import numpy as np
from av.stream import Disposition
from av.video.reformatter import VideoReformatter

from fvc.core.errors import FvcError

Size = int | tuple[int, int]
DECODE_THREADS = 2


class VideoReadError(FvcError, ValueError):
    """A video that cannot be read: `reason` says why, the message also names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


@dataclass(frozen=True)
class FrameTable:
    """Presentation timestamps of every frame (sorted) and of the keyframes, in the stream's time base."""

    pts: np.ndarray
    keyframes: np.ndarray

    def __len__(self) -> int:
        return len(self.pts)


@dataclass
class DecodeStats:
    """What a read cost: frames decoded (kept or dropped), seeks, and whether it decoded sequentially;
    `corrupt_frames`: decoded frames the decoder flagged as corrupt (damage it concealed)."""

    frames_returned: int = 0
    frames_decoded: int = 0
    corrupt_frames: int = 0
    seeks: int = 0
    sequential_fallback: bool = False


class _SeekFailed(Exception):
    """Decoding after a seek did not reach the target frame's timestamp."""


class _UntrustedPts(Exception):
    """Frames decoded from the start carry other timestamps than the packets: number them by count."""


def main_video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The file's main video stream: among video streams that are not cover art, the default-disposition
    ones first, then the largest picture, then the most frames, then the first; None when there is none."""
    streams = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
    if not streams:
        return None
    return max(
        streams,
        key=lambda s: (
            bool(s.disposition & Disposition.default),
            (s.width or 0) * (s.height or 0),
            s.frames,
            -s.index,
        ),
    )


def _dims(size: Size | None) -> tuple[int, int] | None:
    if size is None:
        return None
    width, height = (size, size) if isinstance(size, int) else size
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return int(width), int(height)


def _indices(path: Path, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    wanted = np.asarray(indices)
    if wanted.ndim != 1 or (wanted.size and not np.issubdtype(wanted.dtype, np.integer)):
        raise TypeError(f"{path}: frame indices must be a 1-D sequence of integers, got {indices!r}")
    return wanted.astype(np.int64)


def _out_of_range(path: Path, index: int, count: int) -> IndexError:
    return IndexError(
        f"{path}: frame index {index} is out of range: the video has {count} frames (0..{count - 1})"
    )


def quarter_turns(rotation: float) -> int:
    """Counter-clockwise quarter turns (0-3) of a display rotation in degrees; other angles count as 0."""
    turns, rest = divmod(round(rotation), 90)
    return turns % 4 if rest == 0 else 0


def upright(frame: av.VideoFrame, dims: tuple[int, int] | None, reformatter: VideoReformatter) -> np.ndarray:
    """The frame as RGB [H, W, 3] as displayed: resized to `dims` = displayed (width, height) and turned by
    its display matrix's rotation, through `reformatter`, the conversion context to reuse (a reader keeps
    one for all of its frames: building one per frame costs more than the conversion). One conversion
    thread: FFmpeg's default, one per core, starts a thread pool with each context and would tie the cost to
    the node; the bytes are those of `frame.to_ndarray(format="rgb24", width=, height=)` either way."""
    turns = quarter_turns(frame.rotation)
    kwargs: dict[str, Any] = {}
    if dims is not None:
        width, height = dims if turns % 2 == 0 else dims[::-1]
        kwargs = {"width": width, "height": height}
    image = reformatter.reformat(frame, format="rgb24", threads=1, **kwargs).to_ndarray()
    return np.rot90(image, turns) if turns else image


class _Output:
    """The result array, allocated at the first decoded frame; each distinct index is converted once and
    copied into every row that asked for it."""

    def __init__(
        self, wanted: np.ndarray, dims: tuple[int, int] | None, reformatter: VideoReformatter
    ) -> None:
        self.targets, inverse = np.unique(wanted, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        self.rows = np.split(order, np.cumsum(np.bincount(inverse, minlength=len(self.targets)))[:-1])
        self.count = len(wanted)
        self.dims = dims
        self.reformatter = reformatter
        self.array: np.ndarray | None = None
        self.rotation: int | None = None

    def put(self, k: int, frame: av.VideoFrame) -> None:
        image = upright(frame, self.dims, self.reformatter)
        self.rotation = 90 * quarter_turns(frame.rotation)
        if self.array is None:
            self.array = np.empty((self.count, *image.shape), np.uint8)
        self.array[self.rows[k]] = image

    def result(self) -> np.ndarray:
        """The filled array (a decode pass puts every wanted frame)."""
        assert self.array is not None, "no frame was decoded"
        return self.array


def _check_threads(threads: int) -> None:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(
            f"threads must be an integer >= 1, got {threads!r} (FFmpeg's automatic count, one per core, "
            "would make decoder memory depend on the node)"
        )


class VideoReader:
    """One open video file, read through its main stream: `frames` (count), `table` (None when packet
    timestamps cannot identify frames), `width`/`height` (coded; `rotation`, known after the first decoded
    frame, turns them) and `read`/`decode` for any number of frame sets. Opens the file once, and again only
    when a fallback must restart from the beginning. `table`: this file's frame table when already known
    (nothing is demuxed then). `threads`: decoder threads (their memory grows with them)."""

    def __init__(
        self, path: str | os.PathLike[str], threads: int = DECODE_THREADS, table: FrameTable | None = None
    ) -> None:
        _check_threads(threads)
        self.path = Path(path)
        self.threads = threads
        self.opens = 0
        self._reformatter = VideoReformatter()  # one RGB conversion context for every frame read
        self._open()
        self.rotation: int | None = None
        self.table, self.frames = table, len(table) if table is not None else 0
        if table is None:
            self.table, self.frames = self._demux_table()

    def _open(self) -> None:
        if not self.path.is_file():
            raise VideoReadError(self.path, "no such file")
        try:
            self.container = av.open(str(self.path))
        except av.FFmpegError as exc:
            raise VideoReadError(self.path, f"not a readable media file ({exc})") from exc
        self.opens += 1
        self._fresh = True
        stream = main_video_stream(self.container)
        if stream is None:
            kinds = sorted({s.type for s in self.container.streams})
            self.container.close()
            raise VideoReadError(self.path, f"no video stream (streams: {', '.join(kinds) or 'none'})")
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = self.threads
        self.stream = stream
        self.width, self.height = stream.width, stream.height

    def _reopen(self) -> None:
        self.container.close()
        self._open()

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _demux_table(self) -> tuple[FrameTable | None, int]:
        """The frame table from the stream's packets (no decoding) and the packet count; the table is None
        when some packet has no pts or two frames share one, so that timestamps cannot identify frames."""
        pts, keys = array("q"), array("q")
        usable, count = True, 0
        self._fresh = False
        try:
            for packet in self.container.demux(self.stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                count += 1
                if packet.pts is None:
                    usable = False
                elif usable:
                    pts.append(packet.pts)
                    if packet.is_keyframe:
                        keys.append(packet.pts)
        except av.FFmpegError as exc:
            raise VideoReadError(self.path, f"demuxing failed after {count} packets ({exc})") from exc
        table = FrameTable(np.sort(np.frombuffer(pts, np.int64)), np.sort(np.frombuffer(keys, np.int64)))
        if not usable or (len(table) and np.any(np.diff(table.pts) == 0)):
            return None, count
        return table, count

    def read(self, indices: Sequence[int] | np.ndarray, size: Size | None = None) -> np.ndarray:
        """The frames at `indices` (presentation order, 0-based; any order, repeats allowed) as upright RGB
        uint8 [T, H, W, 3], in the order asked. `size` resizes each frame as it is decoded: an int for
        size x size, or the displayed (width, height)."""
        return self.decode(indices, size)[0]

    def decode(
        self, indices: Sequence[int] | np.ndarray, size: Size | None = None
    ) -> tuple[np.ndarray, DecodeStats]:
        """`read` that also returns what the read cost (frames decoded, seeks, fallback)."""
        wanted = _indices(self.path, indices)
        dims = _dims(size)
        stats = DecodeStats(frames_returned=len(wanted))
        if wanted.size == 0:
            turned = quarter_turns(self.rotation or 0) % 2
            width, height = dims or ((self.height, self.width) if turned else (self.width, self.height))
            return np.empty((0, height, width, 3), np.uint8), stats
        if wanted.min() < 0:
            raise _out_of_range(self.path, int(wanted.min()), self.frames)
        if self.table is not None and wanted.max() >= self.frames:
            raise _out_of_range(self.path, int(wanted.max()), self.frames)
        out = _Output(wanted, dims, self._reformatter)
        try:
            if self.table is None:
                self._fall_back(out, stats, "packet timestamps do not identify frames")
            else:
                try:
                    self._sparse_pass(out, stats)
                except _SeekFailed as exc:
                    self._fall_back(out, stats, str(exc))
        except av.FFmpegError as exc:
            raise VideoReadError(self.path, f"decoding failed ({exc})") from exc
        self.rotation = out.rotation
        return out.result(), stats

    def _fall_back(self, out: _Output, stats: DecodeStats, reason: str) -> None:
        warnings.warn(
            f"{self.path}: sparse decoding failed ({reason}); decoding sequentially up to frame "
            f"{out.targets[-1]}",
            RuntimeWarning,
            stacklevel=4,
        )
        stats.sequential_fallback = True
        out.array = None
        if not self._fresh:
            self._reopen()
        self._fresh = False
        self._sequential(self.container.decode(self.stream), 0, 0, out, stats)

    def _sequential(
        self, frames: Iterator[av.VideoFrame], number: int, k: int, out: _Output, stats: DecodeStats
    ) -> None:
        """Go on through `frames` (the next one is frame `number`) numbering frames in decode output order,
        putting targets k.. and stopping at the last."""
        targets = out.targets
        for frame in frames:
            stats.frames_decoded += 1
            stats.corrupt_frames += frame.is_corrupt
            if number == targets[k]:
                out.put(k, frame)
                k += 1
                if k == len(targets):
                    return
            number += 1
        raise _out_of_range(self.path, int(targets[-1]), number)

    def _known_table(self) -> FrameTable:
        assert self.table is not None, "only a sparse pass, given a frame table, comes here"
        return self.table

    def _frames_from(self, seek_pts: int | None) -> Iterator[av.VideoFrame]:
        """Decoded frames from the keyframe at or before `seek_pts`, or from the start (None)."""
        if seek_pts is not None or not self._fresh:
            table = self._known_table()
            target = table.keyframes[0] if seek_pts is None and len(table.keyframes) else seek_pts
            target = table.pts[0] if target is None else target
            try:
                self.container.seek(int(target), stream=self.stream, backward=True, any_frame=False)
            except av.FFmpegError as exc:
                raise _SeekFailed(f"seek to pts {target} failed: {exc}") from exc
        self._fresh = False
        for packet in self.container.demux(self.stream):
            yield from packet.decode()

    def _sparse_pass(self, out: _Output, stats: DecodeStats) -> None:
        """One forward pass over the targets, seeking only when the target's keyframe lies past the decoder.
        From the start, each frame's pts must be the table's next one; at the first that is not, the pass
        goes on sequentially, numbering frames by count."""
        table = self._known_table()
        target_pts = table.pts[out.targets]
        frames: Iterator[av.VideoFrame] | None = None
        last_pts: int | None = None
        number: int | None = None  # the next frame's number while decoding from the start
        for k, target in enumerate(target_pts):
            before = np.searchsorted(table.keyframes, target, side="right")
            key = int(table.keyframes[before - 1]) if before else None
            if frames is None or (key is not None and last_pts is not None and key > last_pts):
                from_start = frames is None and (key is None or key <= table.pts[0])
                stats.seeks += not from_start
                frames = self._frames_from(None if from_start else key)
                number = 0 if from_start else None
            for frame in frames:
                if number is not None and frame.pts != table.pts[number]:
                    if number == 0:
                        raise _SeekFailed(f"decoding from the start began at pts {frame.pts}")
                    self._continue_sequentially(frame, number, k, out, stats, frames)
                    return
                stats.frames_decoded += 1
                stats.corrupt_frames += frame.is_corrupt
                if frame.pts is None:
                    raise _SeekFailed("a decoded frame has no pts")
                last_pts = frame.pts
                number = None if number is None else number + 1
                if frame.pts == target:
                    out.put(k, frame)
                    break
                if frame.pts > target:
                    raise _SeekFailed(f"decoding reached pts {frame.pts} past target pts {target}")
            else:
                raise _SeekFailed(f"the stream ended before target pts {target}")

    def _continue_sequentially(
        self,
        frame: av.VideoFrame,
        number: int,
        k: int,
        out: _Output,
        stats: DecodeStats,
        frames: Iterator[av.VideoFrame],
    ) -> None:
        warnings.warn(
            f"{self.path}: frame {number} decoded with pts {frame.pts}, not the packets' "
            f"{self._known_table().pts[number]}; numbering frames by count up to frame {out.targets[-1]}",
            RuntimeWarning,
            stacklevel=5,
        )
        stats.sequential_fallback = True
        self._sequential(_chain(frame, frames), number, k, out, stats)


def _chain(first: av.VideoFrame, rest: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
    yield first
    yield from rest


def open_video(
    path: str | os.PathLike[str], threads: int = DECODE_THREADS, table: FrameTable | None = None
) -> VideoReader:
    """A `VideoReader` on `path` (use as a context manager: `with open_video(p) as v: v.read([0, 5])`)."""
    return VideoReader(path, threads, table)


def frame_table(path: str | os.PathLike[str]) -> FrameTable | None:
    """Demux `path`'s main stream (no decoding) into its frame table; None when packet timestamps cannot
    identify frames."""
    with open_video(path) as video:
        return video.table


def count_frames(path: str | os.PathLike[str]) -> int:
    """Frames of `path`'s main stream counted as its video packets (demux only, no decoding)."""
    with open_video(path) as video:
        return video.frames


def decode_frames(
    path: str | os.PathLike[str],
    indices: Sequence[int] | np.ndarray,
    size: Size | None = None,
    threads: int = DECODE_THREADS,
    table: FrameTable | None = None,
) -> tuple[np.ndarray, DecodeStats]:
    """`read_frames` that also returns what the read cost (frames decoded, seeks, fallback)."""
    _check_threads(threads)
    with open_video(path, threads, table) as video:
        return video.decode(indices, size)


def read_frames(
    path: str | os.PathLike[str],
    indices: Sequence[int] | np.ndarray,
    size: Size | None = None,
    threads: int = DECODE_THREADS,
    table: FrameTable | None = None,
) -> np.ndarray:
    """The upright frames at `indices` of `path`'s main stream, through one open of the file (see
    `VideoReader.read`). `table`: this file's `frame_table`, so that several reads of one video demux it
    once. Raises IndexError naming the file, index and frame count for an index out of range, and
    VideoReadError for a file that is missing, not media, without a video stream, or that fails to decode."""
    return decode_frames(path, indices, size, threads, table)[0]
