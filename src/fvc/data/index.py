"""The index stage: probe every downloaded video with PyAV, and quarantine bad files with their reason.

A probe opens the file once (`fvc.data.video.VideoReader`) and reads it through its main video stream, the
one the decoder will read: it demuxes every packet (no decoding: the frame count, and files cut short), then
decodes `check_frames` frames spread evenly across the file (each from its preceding keyframe), so that damage
in the middle is found here rather than one stage later; the first decoded frame also gives the display
rotation, and the index records the displayed width and height. Files that are missing, empty, not media,
still images, audio only, truncated, damaged or shorter than `min_frames` go to rejected.csv with the reason,
and the stage goes on; videos with fewer frames than a clip's `num_frames` are kept but flagged (`short`:
their clips repeat frames). An index left empty is an error naming rejected.csv.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np
import polars as pl

from fvc.core.atomic import atomic_path
from fvc.core.errors import FvcError
from fvc.core.memory import MemoryLog
from fvc.core.progress import progress
from fvc.core.shards import shard_of
from fvc.data.video import VideoReader, VideoReadError

log = logging.getLogger(__name__)

INDEX_SCHEMA = {
    "video_id": pl.Utf8, "path": pl.Utf8, "label": pl.Int64, "group": pl.Utf8,
    "frames": pl.Int64, "fps": pl.Float64, "duration": pl.Float64, "width": pl.Int64, "height": pl.Int64,
    "rotation": pl.Int64, "stream": pl.Int64, "short": pl.Boolean, "codec": pl.Utf8, "size": pl.Int64,
}  # fmt: skip
REJECTED_SCHEMA = {"video_id": pl.Utf8, "path": pl.Utf8, "reason": pl.Utf8}
VIDEOS_COLUMNS = ("video_id", "path", "label", "group")
CHECK_FRAMES = 8
CLIP_FRAMES = 8
CHECK_SIZE = 32  # the spread check decodes at this size: it looks for errors, not pixels
DURATION_TAG = re.compile(r"(\d+):(\d+):(\d+(?:\.\d+)?)")


class ProbeError(FvcError, ValueError):
    """A file that is not a usable video; the message is the reason recorded in rejected.csv."""


class EmptyIndexError(FvcError, RuntimeError):
    """Every video was rejected: nothing is left for the next stage."""


@dataclass(frozen=True)
class VideoInfo:
    """What the index records about one readable video: frames counted from packets, displayed width and
    height, the display `rotation` (counter-clockwise degrees), the main `stream`'s index, and `short`: fewer
    frames than a clip needs."""

    frames: int
    fps: float
    duration: float
    width: int
    height: int
    rotation: int
    stream: int
    short: bool
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


def _is_still_image(container: av.container.InputContainer) -> bool:
    """Opened by an image demuxer (image2, png_pipe, jpeg_pipe, ...): a picture, whatever its suffix."""
    return any(name == "image2" or name.endswith("_pipe") for name in container.format.name.split(","))


def _check_length(video: VideoReader, duration: float | None, fps: float) -> None:
    """The packets must reach the duration the header states (a file cut short keeps its header)."""
    table, stream = video.table, video.stream
    if table is None or not len(table) or not duration or not stream.time_base:
        return
    start = stream.start_time if stream.start_time is not None else int(table.pts[0])
    reached = float((int(table.pts[-1]) - start) * stream.time_base) + 1 / fps
    if reached < duration - max(2 / fps, 0.1):
        raise ProbeError(
            f"truncated: video packets end at {reached:.2f} s but the file says {duration:.2f} s"
        )


def _check_decoding(video: VideoReader, count: int) -> None:
    """Decode `count` frames spread evenly across the file; raise ProbeError at the first damage."""
    spread = np.unique(np.linspace(0, video.frames - 1, count).round().astype(np.int64))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a sequential fallback is fine here
            stats = video.decode(spread, size=CHECK_SIZE)[1]
    except (VideoReadError, IndexError) as exc:
        reason = exc.reason if isinstance(exc, VideoReadError) else str(exc)
        raise ProbeError(f"damaged: decoding frames {spread.tolist()} failed ({reason})") from exc
    if stats.corrupt_frames:
        raise ProbeError(
            f"damaged: decoding frames {spread.tolist()} failed ({stats.corrupt_frames} of "
            f"{stats.frames_decoded} decoded frames flagged corrupt)"
        )


def probe_video(
    path: str | os.PathLike[str],
    check_frames: int = CHECK_FRAMES,
    min_frames: int = 1,
    clip_frames: int = CLIP_FRAMES,
) -> VideoInfo:
    """Probe one video (one open: demux all packets, decode `check_frames` spread frames); raise ProbeError
    with the reason when it is not usable or has fewer than `min_frames` frames. `clip_frames`: frames a clip
    needs (fewer is flagged `short`)."""
    path = Path(path)
    if not path.is_file():
        raise ProbeError("missing file")
    size = path.stat().st_size
    if size == 0:
        raise ProbeError("empty file (0 bytes)")
    try:
        video = VideoReader(path, threads=1)
    except VideoReadError as exc:
        reason = exc.reason
        if reason.startswith("not a readable media file"):
            reason = f"not a readable media file (truncated or not media): {reason.split('(', 1)[1][:-1]}"
        elif reason.startswith("demuxing failed"):
            reason = f"truncated or corrupt: {reason}"
        raise ProbeError(reason) from exc
    with video:
        container, stream = video.container, video.stream
        if _is_still_image(container):
            raise ProbeError(
                f"still image ({container.format.name}, {stream.codec_context.name}), not a video"
            )
        codec = stream.codec_context.name if stream.codec_context else None
        width, height = stream.width, stream.height
        if not codec or not width or not height:
            raise ProbeError(f"video stream without a known codec or size (codec {codec}, {width}x{height})")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if video.frames <= 0:
            raise ProbeError("no video frames")
        if not fps:
            raise ProbeError("video stream without a frame rate")
        duration = _stream_duration(stream, container)
        _check_length(video, duration, fps)
        if video.frames < min_frames:
            raise ProbeError(f"too short: {video.frames} frames, fewer than index.min_frames ({min_frames})")
        _check_decoding(video, check_frames)
        rotation = video.rotation or 0
        if rotation % 180:
            width, height = height, width
        return VideoInfo(
            frames=video.frames,
            fps=fps,
            duration=duration or video.frames / fps,
            width=width,
            height=height,
            rotation=rotation,
            stream=stream.index,
            short=video.frames < clip_frames,
            codec=codec,
            size=size,
        )


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


def _reason_kind(reason: str) -> str:
    """A reason's kind for a summary: its words before the first colon or parenthesis."""
    return re.split(r"[:(]", reason, maxsplit=1)[0].strip()


def _empty_index_message(
    videos_csv: Path, rejected: list[dict], rejected_csv: Path, failed_csv: Path | None
) -> str:
    kinds: dict[str, int] = {}
    for row in rejected:
        kinds[_reason_kind(row["reason"])] = kinds.get(_reason_kind(row["reason"]), 0) + 1
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1]))
    message = (
        f"no usable video: index rejected every one of the {len(rejected)} videos of {videos_csv}"
        f"{f' ({summary})' if summary else ''}; reasons in {rejected_csv}"
    )
    failed = count_entries(failed_csv)
    if failed is not None:
        message += f"; download failed {failed} more entries (reasons in {failed_csv})"
    return message


def count_entries(table: Path | None) -> int | None:
    """Rows of a stage's table of lost entries (download's failed.csv, a rejected.csv); None when absent."""
    if table is None or not table.is_file():
        return None
    return len(pl.read_csv(table, infer_schema=False))


def _probe_all(
    videos: pl.DataFrame, memory: MemoryLog, check_frames: int, min_frames: int, clip_frames: int
) -> tuple[list[dict], list[dict]]:
    """Probe the rows of `videos` in order: (index rows, rejected rows); a bad video is logged, not raised."""
    rows, rejected = [], []
    for video in progress(videos.iter_rows(named=True), total=len(videos), desc="index", unit="video"):
        try:
            info = probe_video(video["path"], check_frames, min_frames, clip_frames)
        except Exception as exc:  # odd media trips odd errors: each rejects only its own file
            reason = str(exc) if isinstance(exc, ProbeError) else f"{type(exc).__name__}: {exc}"
            log.warning("rejected %s (%s): %s", video["video_id"], video["path"], reason)
            rejected.append({"video_id": video["video_id"], "path": video["path"], "reason": reason})
            memory.mark("video", full=False, video_id=video["video_id"], rejected=True)
            continue
        if info.short:
            log.warning(
                "%s has %d frames, fewer than a clip's %d: its clips repeat frames",
                video["video_id"],
                info.frames,
                clip_frames,
            )
        rows.append({**{c: video[c] for c in VIDEOS_COLUMNS}, **asdict(info)})
        memory.mark("video", full=False, video_id=video["video_id"], frames=info.frames)
    return rows, rejected


def _write_index(
    videos_csv: Path,
    rows: list[dict],
    rejected: list[dict],
    out: tuple[Path, Path, Path],
    download_failed: str | os.PathLike[str] | None,
) -> IndexReport:
    """Write rejected.csv, then (unless it is empty: EmptyIndexError) the index as parquet and csv; `out`:
    the parquet, csv and rejected paths."""
    out_parquet, out_csv, rejected_csv = out
    index = pl.DataFrame(rows, schema=INDEX_SCHEMA)
    _write_atomic(pl.DataFrame(rejected, schema=REJECTED_SCHEMA), rejected_csv)
    if index.is_empty():
        failed = Path(download_failed) if download_failed is not None else None
        raise EmptyIndexError(_empty_index_message(videos_csv, rejected, rejected_csv, failed))
    _write_atomic(index, out_parquet)
    _write_atomic(index, out_csv)
    return IndexReport(indexed=len(rows), rejected=len(rejected))


def build_index(
    videos_csv: str | os.PathLike[str],
    out_parquet: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    rejected_csv: str | os.PathLike[str],
    memory_log: str | os.PathLike[str] | None = None,
    *,
    check_frames: int = CHECK_FRAMES,
    clip_frames: int = CLIP_FRAMES,
    min_frames: int | None = None,
    download_failed: str | os.PathLike[str] | None = None,
) -> IndexReport:
    """Probe every video of videos.csv (paths relative to the working directory) into the index (parquet +
    csv) and rejected.csv; a bad video is recorded with its reason and the stage goes on. `check_frames`:
    frames decoded per video to find damage; `clip_frames`: a clip's frames (fewer: flagged `short`);
    `min_frames` (default `clip_frames`): fewer are rejected. Raises EmptyIndexError, after writing
    rejected.csv, when no video is left; its message counts the rejects by reason and, given the download's
    failed.csv (`download_failed`), the entries that failed before."""
    min_frames = clip_frames if min_frames is None else min_frames
    memory = MemoryLog(memory_log, "index")
    memory.mark("start")
    videos = _read_videos(Path(videos_csv))
    rows, rejected = _probe_all(videos, memory, check_frames, min_frames, clip_frames)
    out = (Path(out_parquet), Path(out_csv), Path(rejected_csv))
    report = _write_index(Path(videos_csv), rows, rejected, out, download_failed)
    memory.mark("end", indexed=len(rows), rejected=len(rejected))
    return report


def index_shard(
    videos_csv: str | os.PathLike[str],
    shard: int,
    count: int,
    out_parquet: str | os.PathLike[str],
    rejected_csv: str | os.PathLike[str],
    memory_log: str | os.PathLike[str] | None = None,
    *,
    check_frames: int = CHECK_FRAMES,
    clip_frames: int = CLIP_FRAMES,
    min_frames: int | None = None,
) -> IndexReport:
    """`build_index` over the videos of shard `shard` of `count` (`fvc.core.shards.shard_of`), in the order
    of videos.csv: the shard's index (parquet) and rejected.csv, for `merge_index`. A shard left empty is no
    error here (other shards may hold videos): the merge decides."""
    min_frames = clip_frames if min_frames is None else min_frames
    memory = MemoryLog(memory_log, "index")
    memory.mark("start", shard=shard, count=count)
    videos = _read_videos(Path(videos_csv))
    mine = videos.filter(
        pl.Series([shard_of(v, count) == shard for v in videos["video_id"]], dtype=pl.Boolean)
    )
    rows, rejected = _probe_all(mine, memory, check_frames, min_frames, clip_frames)
    _write_atomic(pl.DataFrame(rejected, schema=REJECTED_SCHEMA), Path(rejected_csv))
    _write_atomic(pl.DataFrame(rows, schema=INDEX_SCHEMA), Path(out_parquet))
    memory.mark("end", videos=len(mine), indexed=len(rows), rejected=len(rejected))
    return IndexReport(indexed=len(rows), rejected=len(rejected))


def merge_index(
    videos_csv: str | os.PathLike[str],
    shard_parquets: list[str],
    shard_rejected: list[str],
    out_parquet: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    rejected_csv: str | os.PathLike[str],
    memory_log: str | os.PathLike[str] | None = None,
    *,
    download_failed: str | os.PathLike[str] | None = None,
) -> IndexReport:
    """The index and rejected.csv of the shards (shard k's files at position k of each list) with rows in the
    order of videos.csv: the same bytes as one job over every video, for any number of shards. Raises
    EmptyIndexError, after writing rejected.csv, as `build_index` does; ValueError when a shard's files do
    not hold exactly its videos of videos.csv (they come from another videos.csv)."""
    memory = MemoryLog(memory_log, "index")
    memory.mark("start", shards=len(shard_parquets))
    videos = _read_videos(Path(videos_csv))
    indexed = [deque(pl.read_parquet(path).to_dicts()) for path in shard_parquets]
    refused = [deque(pl.read_csv(path, schema=REJECTED_SCHEMA).to_dicts()) for path in shard_rejected]
    rows: list[dict] = []
    rejected: list[dict] = []
    for video_id in videos["video_id"]:
        shard = shard_of(video_id, len(indexed))
        for found, queue in ((rows, indexed[shard]), (rejected, refused[shard])):
            if queue and queue[0]["video_id"] == video_id:
                found.append(queue.popleft())
                break
        else:
            raise ValueError(
                f"{shard_parquets[shard]}: no row for {video_id!r} of {videos_csv}; rerun its shard"
            )
    left = next((str(queue[0]["video_id"]) for queue in (*indexed, *refused) if queue), None)
    if left is not None:
        raise ValueError(
            f"the shards of {videos_csv} hold {left!r}, which is not in it (or not there); rerun them"
        )
    out = (Path(out_parquet), Path(out_csv), Path(rejected_csv))
    report = _write_index(Path(videos_csv), rows, rejected, out, download_failed)
    memory.mark("end", indexed=len(rows), rejected=len(rejected))
    return report
