"""The index stage: probe every downloaded video with PyAV without decoding it, and quarantine bad files.

A probe reads the container header (frame count, rate, duration, size, codec) and demuxes only the packets
of the last second or so, to catch files cut short. The frame count comes from the container; when it
reports 0 (WebM/MKV) from duration x fps, rounded down so that it never promises a frame that is not there;
and only as a last resort from counting packets (demux, no decode). Files that are missing, empty, not
media, audio only, without frames or truncated go to rejected.csv with the reason, and the stage goes on.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import polars as pl

from fvc.core.atomic import atomic_path
from fvc.core.errors import FvcError
from fvc.core.memory import MemoryLog
from fvc.core.progress import progress
from fvc.data.video import count_frames

log = logging.getLogger(__name__)

INDEX_SCHEMA = {
    "video_id": pl.Utf8, "path": pl.Utf8, "label": pl.Int64, "group": pl.Utf8,
    "frames": pl.Int64, "frames_source": pl.Utf8, "fps": pl.Float64, "duration": pl.Float64,
    "width": pl.Int64, "height": pl.Int64, "codec": pl.Utf8, "size": pl.Int64,
}  # fmt: skip
REJECTED_SCHEMA = {"video_id": pl.Utf8, "path": pl.Utf8, "reason": pl.Utf8}
VIDEOS_COLUMNS = ("video_id", "path", "label", "group")
TAIL_SECONDS = 1.0
DURATION_TAG = re.compile(r"(\d+):(\d+):(\d+(?:\.\d+)?)")


class ProbeError(FvcError, ValueError):
    """A file that is not a usable video; the message is the reason recorded in rejected.csv."""


@dataclass(frozen=True)
class VideoInfo:
    """What the index records about one readable video. `frames_source`: container, duration or counted."""

    frames: int
    frames_source: str
    fps: float
    duration: float
    width: int
    height: int
    codec: str
    size: int


def _stream_duration(
    stream: av.video.stream.VideoStream, container: av.container.InputContainer
) -> float | None:
    """The video stream's own duration in seconds: stream header, then the Matroska DURATION tag, then the
    container's duration (which may cover other streams too)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    match = DURATION_TAG.fullmatch(stream.metadata.get("DURATION", ""))
    if match:
        hours, minutes, seconds = match.groups()
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if container.duration:
        return container.duration / av.time_base
    return None


def _check_tail(
    path: Path,
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    duration: float,
    fps: float,
) -> None:
    """Demux (no decode) the packets of the last TAIL_SECONDS and check they reach the stated duration."""
    time_base = stream.time_base or Fraction(1, 1000)
    start = stream.start_time or 0
    try:
        container.seek(start + int(max(duration - TAIL_SECONDS, 0) / time_base), stream=stream, backward=True)
    except av.FFmpegError:
        log.info("%s: seek for the tail check failed; demuxing from the start", path)
    end = None
    try:
        for packet in container.demux(stream):
            if packet.size and packet.pts is not None:
                stop = packet.pts + max(packet.duration or 0, 0)
                end = stop if end is None else max(end, stop)
    except av.FFmpegError as exc:
        raise ProbeError(
            f"truncated or corrupt: demuxing the last {TAIL_SECONDS:g} s failed ({exc})"
        ) from exc
    if end is None:
        raise ProbeError(f"truncated: no video packets in the last {TAIL_SECONDS:g} s of {duration:.2f} s")
    reached = float((end - start) * time_base)
    if reached < duration - max(2 / fps, 0.1):
        raise ProbeError(
            f"truncated: video packets end at {reached:.2f} s but the file says {duration:.2f} s"
        )


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Probe one video without decoding it; raise ProbeError with the reason when it is not usable."""
    path = Path(path)
    if not path.is_file():
        raise ProbeError("missing file")
    size = path.stat().st_size
    if size == 0:
        raise ProbeError("empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise ProbeError(f"not a readable media file (truncated or not media): {exc}") from exc
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams})
            raise ProbeError(f"no video stream (streams: {', '.join(kinds) or 'none'})")
        stream = container.streams.video[0]
        codec = stream.codec_context.name if stream.codec_context else None
        width, height = stream.width, stream.height
        if not codec or not width or not height:
            raise ProbeError(f"video stream without a known codec or size (codec {codec}, {width}x{height})")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        duration = _stream_duration(stream, container)
        if stream.frames > 0:
            frames, source = stream.frames, "container"
        elif duration and fps:
            frames, source = math.floor(duration * fps + 1e-6), "duration"
        else:
            frames, source = 0, "counted"
        if source != "counted" and duration:
            _check_tail(path, container, stream, duration, fps or 25.0)
    if source == "counted":
        try:
            frames = count_frames(path)
        except av.FFmpegError as exc:
            raise ProbeError(f"truncated or corrupt: counting packets failed ({exc})") from exc
    if frames <= 0:
        raise ProbeError("no video frames")
    if not fps:
        raise ProbeError("video stream without a frame rate")
    return VideoInfo(frames, source, fps, duration or frames / fps, width, height, codec, size)


@dataclass(frozen=True)
class IndexReport:
    """How many videos the index holds and how many went to rejected.csv."""

    indexed: int
    rejected: int


def _read_videos(videos_csv: Path) -> pl.DataFrame:
    types = {c: INDEX_SCHEMA[c] for c in VIDEOS_COLUMNS}
    try:
        table = pl.read_csv(videos_csv, schema_overrides=types)
    except pl.exceptions.PolarsError as exc:
        raise ValueError(f"{videos_csv}: not a readable videos table ({exc})") from exc
    missing = [c for c in VIDEOS_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{videos_csv}: missing columns {missing} (has {table.columns})")
    if not table["label"].is_in([0, 1]).all():
        raise ValueError(f"{videos_csv}: column 'label' must hold 0 or 1")
    return table


def _write_atomic(frame: pl.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp) if path.suffix == ".parquet" else frame.write_csv(tmp)


def build_index(
    videos_csv: str | os.PathLike[str],
    out_parquet: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    rejected_csv: str | os.PathLike[str],
    memory_log: str | os.PathLike[str] | None = None,
) -> IndexReport:
    """Probe every video of videos.csv (paths relative to the working directory) into the index (parquet +
    csv) and rejected.csv; a bad video is recorded with its reason and the stage goes on."""
    memory = MemoryLog(memory_log, "index")
    memory.mark("start")
    videos = _read_videos(Path(videos_csv))
    rows, rejected = [], []
    for video in progress(videos.iter_rows(named=True), total=len(videos), desc="index", unit="video"):
        try:
            info = probe_video(video["path"])
        except Exception as exc:  # odd media trips odd errors: each rejects only its own file
            reason = str(exc) if isinstance(exc, ProbeError) else f"{type(exc).__name__}: {exc}"
            log.warning("rejected %s (%s): %s", video["video_id"], video["path"], reason)
            rejected.append({"video_id": video["video_id"], "path": video["path"], "reason": reason})
            memory.mark("video", video_id=video["video_id"], rejected=True)
            continue
        rows.append({**{c: video[c] for c in VIDEOS_COLUMNS}, **asdict(info)})
        memory.mark("video", video_id=video["video_id"], frames=info.frames, frames_source=info.frames_source)
    index = pl.DataFrame(rows, schema=INDEX_SCHEMA)
    _write_atomic(pl.DataFrame(rejected, schema=REJECTED_SCHEMA), Path(rejected_csv))
    _write_atomic(index, Path(out_parquet))
    _write_atomic(index, Path(out_csv))
    if index.is_empty():
        log.warning("%s: no readable video; every one is in %s", videos_csv, rejected_csv)
    memory.mark("end", indexed=len(rows), rejected=len(rejected))
    return IndexReport(indexed=len(rows), rejected=len(rejected))
