"""K un-augmented clips per video, spread over its duration, for video-level scores (`infer.clips_per_video`).

Each clip covers a window of WINDOW of the video (the shortest temporal window training sees) with
`num_frames` frames at the centres of equal segments of it, as augment's original clip does over the whole
video. The K windows start evenly from the video's first frame to its last possible start; for odd K the
middle one is centred on the video's middle, and it is the one clip of K = 1, so a video's centre-clip score
comes with its K-clip score at no extra decoding. Every clip of a video is decoded sparsely in one read of one
open of the file; one video is in memory at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from fvc.clips.augment import DECODE_ERRORS, VideoRejected
from fvc.data.video import DECODE_THREADS, open_video

WINDOW = 0.6  # share of the video one clip covers (training's jittered windows cover 60-100 %)


def clip_starts(frames: int, clips: int) -> np.ndarray:
    """Start (fractional frame) of each of `clips` windows of WINDOW x `frames`: evenly from 0 to the last
    start; one clip is centred."""
    last = frames * (1 - WINDOW)
    if clips == 1:
        return np.array([last / 2])
    return np.linspace(0.0, last, clips)


def clip_indices(frames: int, num_frames: int, clips: int) -> np.ndarray:
    """Frame indices `[clips, num_frames]` of a video of `frames` frames: clip k takes the centres of
    `num_frames` equal segments of its window (frames repeat in a video shorter than the clip)."""
    if frames < 1 or num_frames < 1 or clips < 1:
        raise ValueError(f"need frames, num_frames and clips >= 1; got {frames}, {num_frames}, {clips}")
    span = WINDOW * frames
    offsets = (2 * np.arange(num_frames) + 1) * span / (2 * num_frames)
    indices = np.floor(clip_starts(frames, clips)[:, None] + offsets[None, :])
    return np.clip(indices, 0, frames - 1).astype(np.int64)


def centre_clip(clips: int) -> int:
    """The position, among `clips` (odd), of the clip centred on the video: the clip of K = 1."""
    if clips % 2 == 0:
        raise ValueError(f"clips per video must be odd (the centre clip is one of them), got {clips}")
    return clips // 2


def read_video_clips(
    path: str, num_frames: int, size: int, clips: int, threads: int = DECODE_THREADS
) -> torch.Tensor:
    """The `clips` clips of the video at `path` as uint8 `[clips, num_frames, 3, size, size]` (upright), from
    one open and one sparse read. Raises VideoRejected with the decoder's reason."""
    try:
        with open_video(path, threads=threads) as video:
            if video.frames < 1:
                raise VideoRejected("the stream has no video frames")
            indices = clip_indices(video.frames, num_frames, clips)
            frames = video.read(indices.reshape(-1), size=size)
    except DECODE_ERRORS as exc:
        raise VideoRejected(f"{path}: {type(exc).__name__}: {exc}") from exc
    clip = torch.from_numpy(frames).reshape(clips, num_frames, size, size, 3)
    return clip.permute(0, 1, 4, 2, 3).contiguous()


class VideoClips(IterableDataset):
    """Index rows (`path`, optional `label`) -> (uint8 clip `[T, 3, size, size]`, float label), `clips`
    consecutive clips per video in row order, one video decoded at a time. Single-process loading only
    (`num_workers=0`): the rows are not split among workers."""

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        num_frames: int,
        size: int,
        clips: int,
        threads: int = DECODE_THREADS,
    ) -> None:
        self.rows, self.num_frames, self.size, self.clips, self.threads = (
            rows,
            num_frames,
            size,
            clips,
            threads,
        )

    def __len__(self) -> int:
        return len(self.rows) * self.clips

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for row in self.rows:
            label = torch.tensor(float(row.get("label") or 0))
            video = read_video_clips(row["path"], self.num_frames, self.size, self.clips, self.threads)
            yield from ((clip, label) for clip in video)
            del video
