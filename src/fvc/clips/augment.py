"""The shared augmented clips: for every indexed video, its original clip (aug_idx 0: frames sampled evenly,
only resized) and `num_augmentations` augmented clips, made once and filtered per fold later.

Every clip depends only on (seed, video_id, aug_idx) and the video's bytes: its randomness comes from local
generators seeded with `stable_seed(seed, video_id, aug_idx)`, so the result is the same in every run,
process and processing order. Each video is opened once for all of its clips; frames are decoded sparsely
(only the sampled ones), one clip at a time. Each clip is written atomically; a video's clips are made durable
together, then journalled together (in a background thread, while the next video decodes), so a killed run
resumes from the journal and ends with the same clips.csv and clip files as an uninterrupted one."""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import polars as pl

from fvc.clips.journal import Journal, read_journal
from fvc.clips.store import ClipBatch
from fvc.core.atomic import atomic_open, remove_stale_temps
from fvc.core.errors import FvcError
from fvc.core.memory import MemoryLog, release_freed_memory
from fvc.core.progress import progress
from fvc.core.seeding import stable_seed
from fvc.core.shards import shard_of
from fvc.data.index import count_entries
from fvc.data.manifest import check_video_id
from fvc.data.video import DECODE_THREADS, VideoReader, VideoReadError, open_video

log = logging.getLogger(__name__)

CLIP_COLUMNS = (
    "clip_path", "label", "group", "original_video", "aug_idx", "seed", "num_frames", "height", "width",
)  # fmt: skip
REJECTED_COLUMNS = ("video_id", "path", "reason")
INDEX_COLUMNS = ("video_id", "path", "label", "group", "frames")
WORK_SCALE = 2  # augmented clips are decoded at WORK_SCALE x size, then cropped and resized to size
# A temporary file's name (`.<name>.<pid>.<random>.tmp`: fvc.core.atomic.create_temp), <name> as group 1.
TEMP_TARGET = re.compile(r"\.(.+)\.\d+\.[0-9a-f]{8}\.tmp")
# What a VideoReader raises for a broken or truncated file (PyAV's errors are OSError/ValueError subclasses).
DECODE_ERRORS = (VideoReadError, IndexError, OSError, EOFError, ValueError, RuntimeError, av.FFmpegError)


class AugmentError(FvcError, ValueError):
    """An index that cannot be augmented; the message names the file and the row."""


class VideoRejected(Exception):
    """A video whose frames cannot be decoded; the message gives the decoder's reason."""


@dataclass(frozen=True)
class Augmentation:
    """The parameters of one augmented clip, applied alike to all of its frames. The crop box is in
    fractions of the frame; `hue` in radians; blur and JPEG are off when None."""

    crop: tuple[float, float, float, float]  # x0, y0, width, height
    flip: bool
    brightness: float
    contrast: float
    saturation: float
    hue: float
    blur_sigma: float | None
    jpeg_quality: float | None


@dataclass(frozen=True)
class AugmentReport:
    """What a run produced: clip rows written to clips.csv, rejected videos, clips made (not resumed)."""

    clips: int
    rejected: int
    made: int


def clip_seed(seed: int, video_id: str, aug_idx: int) -> int:
    """The seed of one clip, from the base seed and the video's relative id (never its absolute path)."""
    return stable_seed(seed, video_id, aug_idx)


def original_indices(frames: int, num_frames: int) -> np.ndarray:
    """Evenly spaced frame indices: the centres of `num_frames` equal segments of the video."""
    return (2 * np.arange(num_frames, dtype=np.int64) + 1) * frames // (2 * num_frames)


def jittered_indices(frames: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a random temporal window (60-100 % of the video at a random offset), one random
    frame in each of its `num_frames` equal segments."""
    span = max(1.0, rng.uniform(0.6, 1.0) * frames)
    start = rng.uniform(0.0, frames - span)
    offsets = (np.arange(num_frames) + rng.random(num_frames)) * span / num_frames
    return np.clip(np.floor(start + offsets), 0, frames - 1).astype(np.int64)


def sample_augmentation(rng: np.random.Generator) -> Augmentation:
    """Random crop (50-100 % of the area, aspect 3/4-4/3), flip, colour jitter, blur and JPEG artefacts."""
    area, aspect = rng.uniform(0.5, 1.0), math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    width, height = min(1.0, math.sqrt(area * aspect)), min(1.0, math.sqrt(area / aspect))
    crop = (rng.uniform(0, 1 - width), rng.uniform(0, 1 - height), width, height)
    jitter = rng.random() < 0.8
    return Augmentation(
        crop=crop,
        flip=bool(rng.random() < 0.5),
        brightness=rng.uniform(-0.15, 0.15) if jitter else 0.0,
        contrast=rng.uniform(0.8, 1.2) if jitter else 1.0,
        saturation=rng.uniform(0.7, 1.3) if jitter else 1.0,
        hue=rng.uniform(-0.2, 0.2) if jitter else 0.0,
        blur_sigma=rng.uniform(0.3, 1.2) if rng.random() < 0.3 else None,
        jpeg_quality=rng.uniform(30, 90) if rng.random() < 0.3 else None,
    )


@contextlib.contextmanager
def _plain_cpu_ops() -> Iterator[None]:
    """Run torch ops on one thread and without oneDNN, restoring both settings: results do not depend on the
    thread count, and oneDNN's per-shape primitive cache cannot grow the process from clip to clip."""
    import torch

    threads, mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False  # type: ignore[assignment]  # stubs type the flag as a descriptor
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = mkldnn


def apply_augmentation(frames: np.ndarray, aug: Augmentation, size: int) -> np.ndarray:
    """Apply `aug` to every frame of a uint8 [T, H, W, 3] clip alike (torch and kornia functional ops, no
    RNG); return uint8 [T, size, size, 3]. torch and kornia are imported here, at the first augmented clip:
    the stage starts without them, and a run of original clips only never loads them."""
    import torch
    from kornia.enhance import (
        adjust_brightness,
        adjust_contrast,
        adjust_hue,
        adjust_saturation,
        jpeg_codec_differentiable,
    )
    from kornia.filters import gaussian_blur2d
    from kornia.geometry.transform import hflip
    from torch.nn.functional import interpolate

    height, width = frames.shape[1:3]
    x0, y0, cw, ch = aug.crop
    left, top = round(x0 * width), round(y0 * height)
    right, bottom = max(left + 1, round((x0 + cw) * width)), max(top + 1, round((y0 + ch) * height))
    with _plain_cpu_ops():
        x = torch.from_numpy(frames[:, top:bottom, left:right]).permute(0, 3, 1, 2).float().div_(255)
        # torch's own antialiased resize: kornia's blurs with a kernel per crop shape, and memory grows.
        x = interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = x.clamp_(0, 1)
        if aug.flip:
            x = hflip(x)
        x = adjust_brightness(x, aug.brightness)
        x = adjust_contrast(x, aug.contrast)
        x = adjust_saturation(x, aug.saturation)
        x = adjust_hue(x, aug.hue).clamp_(0, 1)
        if aug.blur_sigma is not None:
            kernel = 2 * math.ceil(2 * aug.blur_sigma) + 1
            x = gaussian_blur2d(x, (kernel, kernel), (aug.blur_sigma, aug.blur_sigma))
        if aug.jpeg_quality is not None:
            x = jpeg_codec_differentiable(x, torch.tensor([aug.jpeg_quality]))
        out = x.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return out.numpy()


@contextlib.contextmanager
def source_video(video: dict, threads: int = DECODE_THREADS) -> Iterator[VideoReader]:
    """An index row's video, opened once for all of its clips (its packets demuxed, nothing decoded). Frames
    are counted from its packets (`frames`): the index's count can be an estimate from the duration
    (WebM/MKV), and one too high would reject a good video."""
    try:
        reader = open_video(video["path"], threads=threads)
    except DECODE_ERRORS as exc:
        raise VideoRejected(f"demuxing failed: {type(exc).__name__}: {exc}") from exc
    with reader:
        if reader.frames < 1:
            raise VideoRejected("the stream has no video frames")
        if reader.frames != video["frames"]:
            log.info(
                "augment: %s has %d frames (the index says %d)",
                video["video_id"],
                reader.frames,
                video["frames"],
            )
        yield reader


def _decode(source: VideoReader, indices: np.ndarray, size: int) -> np.ndarray:
    try:
        return source.read(indices, size=size)
    except DECODE_ERRORS as exc:
        raise VideoRejected(f"{type(exc).__name__}: {exc}") from exc


def make_clip(source: VideoReader, num_frames: int, size: int, aug_idx: int, seed: int) -> np.ndarray:
    """Decode and, for aug_idx > 0, augment one clip of the open video `source`: uint8 [T, size, size, 3].
    Raises VideoRejected when the video cannot be decoded."""
    if aug_idx == 0:
        return _decode(source, original_indices(source.frames, num_frames), size)
    rng = np.random.default_rng(seed)
    indices = jittered_indices(source.frames, num_frames, rng)
    aug = sample_augmentation(rng)
    return apply_augmentation(_decode(source, indices, WORK_SCALE * size), aug, size)


def clip_name(video_id: str, aug_idx: int) -> str:
    """The clip's path inside the clips folder: the video's relative id plus `.aug<k>.safetensors`."""
    return f"{video_id}.aug{aug_idx}.safetensors"


def read_index(index_parquet: str | os.PathLike[str]) -> pl.DataFrame:
    """The index columns augment needs, sorted by video_id, with ids checked to be safe relative paths."""
    try:
        index = pl.read_parquet(Path(index_parquet), columns=list(INDEX_COLUMNS))
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise AugmentError(f"{index_parquet}: cannot read the index ({exc})") from exc
    index = index.with_columns(pl.col("video_id", "path", "group").cast(pl.String)).sort("video_id")
    for row, video_id in enumerate(index["video_id"]):
        problem = "is missing" if video_id is None else check_video_id(video_id)
        if problem:
            raise AugmentError(f"{index_parquet}: row {row}: video_id {problem}")
    duplicated = index.filter(pl.col("video_id").is_duplicated())["video_id"].unique().sort()
    if duplicated.len():
        raise AugmentError(f"{index_parquet}: duplicate video_id {duplicated.head(5).to_list()}")
    return index


def _check_names(video_ids: list[str], num_augmentations: int, index_parquet: object) -> None:
    """No two clips may share a file name, and no clip file may be a folder of another video's clips."""
    names = {clip_name(v, a) for v in video_ids for a in range(num_augmentations + 1)}
    folders = {str(p) for v in video_ids for p in Path(v).parents}
    clash = sorted(names & folders)
    if clash:
        raise AugmentError(f"{index_parquet}: clip file {clash[0]!r} would also be a folder of another video")


def _clip_row(clips_dir: str, video: dict, aug_idx: int, seed: int, num_frames: int, size: int) -> dict:
    return {
        "clip_path": (Path(clips_dir) / clip_name(video["video_id"], aug_idx)).as_posix(),
        "label": str(video["label"]),
        "group": str(video["group"]),
        "original_video": video["video_id"],
        "aug_idx": str(aug_idx),
        "seed": str(seed),
        "num_frames": str(num_frames),
        "height": str(size),
        "width": str(size),
    }


def _write_rows_atomic(path: str | os.PathLike[str], columns: tuple[str, ...], rows: list[dict]) -> None:
    with atomic_open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


class _DurableJournal:
    """Makes each video's clips durable and then journals their rows in a background thread, while the main
    thread decodes the next video: fsync waits on the disk, decoding on the CPU. One video at a time is in
    flight (`submit` waits for the previous one), and its rows reach the journal only after its clips are
    durable, so a kill loses at most the unjournalled clips of two videos, which a resumed run makes again.
    An error of the background work is raised by the next `submit` or on leaving the block."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="augment-durable")
        self._pending: Future[None] | None = None

    def _commit(self, batch: ClipBatch, rows: list[dict]) -> None:
        batch.commit()
        self._journal.append(rows)

    def wait(self) -> None:
        """Wait for the video in flight; raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def submit(self, batch: ClipBatch, rows: list[dict]) -> None:
        """Make `batch` durable, then journal `rows`, in the background."""
        try:
            self.wait()
        except BaseException:
            batch.discard()
            raise
        self._pending = self._pool.submit(self._commit, batch, rows)

    def __enter__(self) -> _DurableJournal:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        try:
            if kind is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True)


def _augment_video(
    video: dict, expected: list[dict], done: dict, journal: _DurableJournal, **clip: int
) -> int:
    """Make the clips of one video that the journal lacks and hand them to `journal`; return how many were
    made. They are made durable together, then journalled together (one fsync per folder and one for the
    journal per video, not per clip). Raises VideoRejected when the video cannot be decoded (none of its clips
    is journalled then)."""
    missing = [row for a, row in enumerate(expected) if (video["video_id"], a) not in done]
    if not missing:
        return 0
    batch = ClipBatch()
    try:
        with source_video(video, clip["threads"]) as source:
            for row in missing:
                aug_idx = int(row["aug_idx"])
                frames = make_clip(source, clip["num_frames"], clip["size"], aug_idx, int(row["seed"]))
                metadata = {"video_id": video["video_id"], "aug_idx": row["aug_idx"], "seed": row["seed"]}
                batch.write(row["clip_path"], frames, metadata)
                del frames
    except BaseException:
        batch.discard()
        raise
    journal.submit(batch, missing)
    return len(missing)


def _earlier_losses(
    index_rejected: str | os.PathLike[str] | None, download_failed: str | os.PathLike[str] | None
) -> str:
    """'; index rejected N more entries (reasons in F)' and the same for the download, for the files given
    and present."""
    text = ""
    for stage, verb, table in (
        ("index", "rejected", index_rejected),
        ("download", "failed", download_failed),
    ):
        path = Path(table) if table is not None else None
        count = count_entries(path)
        if count is not None:
            text += f"; {stage} {verb} {count} more entries (reasons in {path})"
    return text


def _remove_own_stale_temps(rows: list[dict]) -> int:
    """Delete the temporary files that killed writers left for the clips of `rows`, and only those: other
    shards may be writing theirs into the same folders at the same time."""
    names: dict[Path, set[str]] = {}
    for row in rows:
        path = Path(row["clip_path"])
        names.setdefault(path.parent, set()).add(path.name)
    removed = 0
    for folder, own in names.items():
        if not folder.is_dir():
            continue
        for tmp in folder.glob(".*.tmp"):
            target = TEMP_TARGET.fullmatch(tmp.name)
            if target and target.group(1) in own and tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed


@dataclass(frozen=True)
class _Run:
    """One pass over an index: its videos (sorted by video_id), the clip rows of those not rejected, the
    rejected videos and how many clips were made now."""

    videos: list[dict]
    rows: list[dict]
    rejected: list[dict]
    made: int


def _augment_index(
    index_parquet: str | os.PathLike[str],
    clips_dir: str | os.PathLike[str],
    journal: str | os.PathLike[str],
    mem: MemoryLog,
    clip: dict[str, int],
    *,
    shared_clips_dir: bool,
) -> _Run:
    """Make the clips of every video of `index_parquet` that `journal` lacks, journalling them. `clip`:
    num_frames, size, num_augmentations, seed, decode_threads. `shared_clips_dir`: other jobs write into
    `clips_dir` too, so only this index's stale temporary files are removed, else every one in it."""
    num_frames, size, num_augmentations = clip["num_frames"], clip["size"], clip["num_augmentations"]
    if num_frames < 1 or size < 8 or num_augmentations < 0 or clip["decode_threads"] < 1:
        raise AugmentError(
            f"need num_frames >= 1, size >= 8, num_augmentations >= 0, decode_threads >= 1; got "
            f"{num_frames}, {size}, {num_augmentations}, {clip['decode_threads']}"
        )
    index = read_index(index_parquet)
    videos = index.to_dicts()
    del index
    _check_names([v["video_id"] for v in videos], num_augmentations, index_parquet)
    clips_dir = str(clips_dir)
    expected = {
        v["video_id"]: [
            _clip_row(clips_dir, v, a, clip_seed(clip["seed"], v["video_id"], a), num_frames, size)
            for a in range(num_augmentations + 1)
        ]
        for v in videos
    }
    done = {}
    for row in read_journal(journal, CLIP_COLUMNS):
        rows = expected.get(row["original_video"])
        aug = int(row["aug_idx"]) if row["aug_idx"].isdigit() else -1
        if rows and 0 <= aug < len(rows) and rows[aug] == row and Path(row["clip_path"]).is_file():
            done[(row["original_video"], aug)] = row
    if shared_clips_dir:
        stale = _remove_own_stale_temps([row for rows in expected.values() for row in rows])
    else:
        stale = remove_stale_temps(clips_dir, recursive=True)
    stale += remove_stale_temps(Path(journal).parent)
    mem.mark("start", videos=len(videos), resumed_clips=len(done), stale_temps=stale)
    log.info("augment: %d videos, %d clips already in %s", len(videos), len(done), journal)
    rejected: list[dict] = []
    made = 0
    with Journal(journal, CLIP_COLUMNS, done.values()) as jr, _DurableJournal(jr) as durable:
        for number, video in enumerate(progress(videos, desc="augment", unit="video")):
            reason = None
            if video["frames"] is None or video["frames"] < 1:
                reason = f"the index gives no frame count ({video['frames']})"
            else:
                try:
                    made += _augment_video(
                        video,
                        expected[video["video_id"]],
                        done,
                        durable,
                        num_frames=num_frames,
                        size=size,
                        threads=clip["decode_threads"],
                    )
                except VideoRejected as exc:
                    reason = str(exc)
            if reason:
                log.warning("augment: rejecting %s: %s", video["video_id"], reason)
                rejected.append({"video_id": video["video_id"], "path": video["path"], "reason": reason})
            release_freed_memory()
            mem.mark("video", full=False, video_id=video["video_id"], number=number, made=made)
    bad = {r["video_id"] for r in rejected}
    rows = [row for v in videos if v["video_id"] not in bad for row in expected[v["video_id"]]]
    return _Run(videos=videos, rows=rows, rejected=rejected, made=made)


def _write_outputs(
    run: _Run,
    out_csv: str | os.PathLike[str],
    rejected_csv: str | os.PathLike[str],
    index_parquet: str | os.PathLike[str],
    earlier: tuple[str | os.PathLike[str] | None, str | os.PathLike[str] | None],
) -> AugmentReport:
    """Write rejected.csv, then (unless every video was rejected: AugmentError, which also counts the
    `earlier` losses: the index's rejected.csv and the download's failed.csv) clips.csv."""
    _write_rows_atomic(rejected_csv, REJECTED_COLUMNS, run.rejected)
    if not run.rows:
        raise AugmentError(
            f"{index_parquet}: every one of the {len(run.videos)} videos was rejected "
            f"(reasons in {rejected_csv}){_earlier_losses(*earlier)}"
        )
    _write_rows_atomic(out_csv, CLIP_COLUMNS, run.rows)
    log.info(
        "augment: %d clips of %d videos (%d made now), %d rejected",
        len(run.rows),
        len(run.videos) - len(run.rejected),
        run.made,
        len(run.rejected),
    )
    return AugmentReport(clips=len(run.rows), rejected=len(run.rejected), made=run.made)


def augment_all(
    index_parquet: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    rejected_csv: str | os.PathLike[str],
    clips_dir: str | os.PathLike[str],
    journal: str | os.PathLike[str],
    num_frames: int,
    size: int,
    num_augmentations: int,
    seed: int,
    *,
    decode_threads: int,
    memory_log: str | os.PathLike[str] | None = None,
    index_rejected: str | os.PathLike[str] | None = None,
    download_failed: str | os.PathLike[str] | None = None,
) -> AugmentReport:
    """Make every indexed video's clips (resuming from `journal`), then write clips.csv sorted by
    (original_video, aug_idx) and rejected.csv (video_id,path,reason) for videos that cannot be decoded.
    Raises AugmentError, after writing rejected.csv, when every video is rejected; its message also counts
    the entries lost before, from the index's rejected.csv (`index_rejected`) and the download's failed.csv
    (`download_failed`) when given and present."""
    mem = MemoryLog(memory_log, "augment")
    clip = dict(
        num_frames=num_frames,
        size=size,
        num_augmentations=num_augmentations,
        seed=seed,
        decode_threads=decode_threads,
    )
    run = _augment_index(index_parquet, clips_dir, journal, mem, clip, shared_clips_dir=False)
    report = _write_outputs(run, out_csv, rejected_csv, index_parquet, (index_rejected, download_failed))
    mem.mark("end", clips=report.clips, rejected=report.rejected, made=report.made)
    return report


def augment_shard(
    index_parquet: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    rejected_csv: str | os.PathLike[str],
    clips_dir: str | os.PathLike[str],
    journal: str | os.PathLike[str],
    num_frames: int,
    size: int,
    num_augmentations: int,
    seed: int,
    *,
    decode_threads: int,
    memory_log: str | os.PathLike[str] | None = None,
) -> AugmentReport:
    """`augment_all` over one shard's index (`fvc.data.index.index_shard`), for `merge_clips`: its clips go
    to the clips folder that every shard shares, its rows and rejected videos to its own files (written even
    when empty: the merge decides whether every video was rejected), resuming from its own `journal`."""
    mem = MemoryLog(memory_log, "augment")
    clip = dict(
        num_frames=num_frames,
        size=size,
        num_augmentations=num_augmentations,
        seed=seed,
        decode_threads=decode_threads,
    )
    run = _augment_index(index_parquet, clips_dir, journal, mem, clip, shared_clips_dir=True)
    _write_rows_atomic(rejected_csv, REJECTED_COLUMNS, run.rejected)
    _write_rows_atomic(out_csv, CLIP_COLUMNS, run.rows)
    mem.mark("end", clips=len(run.rows), rejected=len(run.rejected), made=run.made)
    return AugmentReport(clips=len(run.rows), rejected=len(run.rejected), made=run.made)


def _rows_by_video(path: str | os.PathLike[str], key: str) -> dict[str, list[dict]]:
    """A shard's CSV rows (as strings) grouped by the column `key`, in file order."""
    grouped: dict[str, list[dict]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            grouped.setdefault(row[key], []).append(row)
    return grouped


def merge_clips(
    index_parquet: str | os.PathLike[str],
    shard_clips: list[str],
    shard_rejected: list[str],
    out_csv: str | os.PathLike[str],
    rejected_csv: str | os.PathLike[str],
    num_augmentations: int,
    *,
    memory_log: str | os.PathLike[str] | None = None,
    index_rejected: str | os.PathLike[str] | None = None,
    download_failed: str | os.PathLike[str] | None = None,
) -> AugmentReport:
    """clips.csv and rejected.csv of the shards (shard k's files at position k of each list), over the whole
    (merged) index: rows sorted by (original_video, aug_idx), the same bytes as `augment_all` for any number
    of shards. Raises AugmentError as `augment_all` does (every video rejected, clip names that clash across
    shards), and when a shard's files do not hold exactly its videos of the index (rerun that shard)."""
    mem = MemoryLog(memory_log, "augment")
    mem.mark("start", shards=len(shard_clips))
    videos = read_index(index_parquet).to_dicts()
    _check_names([v["video_id"] for v in videos], num_augmentations, index_parquet)
    clips = [_rows_by_video(path, "original_video") for path in shard_clips]
    refused = [_rows_by_video(path, "video_id") for path in shard_rejected]
    rows, rejected = [], []
    for video in videos:
        video_id, shard = video["video_id"], shard_of(video["video_id"], len(clips))
        found = clips[shard].pop(video_id, None)
        if found is not None and len(found) == num_augmentations + 1:
            rows += found
        elif found is None and video_id in refused[shard]:
            rejected += refused[shard].pop(video_id)
        else:
            raise AugmentError(
                f"{shard_clips[shard]}: not the clips of {video_id!r} of {index_parquet}; rerun it"
            )
    left = next((video_id for shard in (*clips, *refused) for video_id in shard), None)
    if left is not None:
        raise AugmentError(f"the augment shards hold {left!r}, which {index_parquet} lacks; rerun them")
    run = _Run(videos=videos, rows=rows, rejected=rejected, made=0)
    report = _write_outputs(run, out_csv, rejected_csv, index_parquet, (index_rejected, download_failed))
    mem.mark("end", clips=report.clips, rejected=report.rejected)
    return report
