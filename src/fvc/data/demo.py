"""The demo dataset: real H.264 videos in two classes, packed into one deterministic archive with a manifest.

"real" videos show a moving synthetic scene with a smoothly shaded "face" ellipse; "fake" videos have the
same kind of scene, but a foreign striped texture is blended into the face with a per-frame flickering alpha
and a colour shift (a learnable manipulation, like a badly blended face swap). Resolution, frame rate, length,
GOP and CRF vary; some originals have a near-duplicate re-encode (smaller, higher CRF) in the same group,
as FVC's cascades do. The same seed gives byte-identical files."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from fvc.core.atomic import atomic_open
from fvc.core.memory import MemoryLog
from fvc.core.progress import progress
from fvc.core.seeding import stable_seed

ARCHIVE_NAME = "fvc_demo.tar.gz"
MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("video_id", "url", "label", "group", "sha256", "size")
SIZES = ((96, 72), (112, 84), (128, 96), (160, 120), (176, 144), (192, 144))
RATES = (Fraction(12), Fraction(15), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30))
GROUP_COPIES = (1, 1, 2, 2)  # videos per group, cycling; groups alternate real, fake: balanced labels
FIXED_MTIME = 946684800  # 2000-01-01, for reproducible tar headers


@dataclass(frozen=True)
class DemoVideo:
    """One demo video: what it shows (scene seed, label) and how it is encoded."""

    video_id: str
    label: str
    group: str
    scene_seed: int
    width: int
    height: int
    source_width: int
    source_height: int
    fps: Fraction
    frames: int
    gop: int
    crf: int


def plan_videos(videos: int, seed: int) -> list[DemoVideo]:
    """The `videos` demo videos: groups of one original and possibly a re-encode, labels alternating."""
    planned: list[DemoVideo] = []
    group_idx = 0
    while len(planned) < videos:
        label = ("real", "fake")[group_idx % 2]
        group = f"g{group_idx:03d}"
        rng = np.random.default_rng(stable_seed(seed, "demo-group", group_idx))
        width, height = SIZES[rng.integers(len(SIZES))]
        scene_seed = stable_seed(seed, "demo-scene", group_idx)
        fps, frames = RATES[rng.integers(len(RATES))], int(rng.integers(16, 49))
        gop, crf = int(rng.integers(4, 25)), int(rng.integers(18, 27))
        for copy in range(min(GROUP_COPIES[group_idx % len(GROUP_COPIES)], videos - len(planned))):
            scale = 1.0 if copy == 0 else float(rng.choice([0.625, 0.75]))
            planned.append(
                DemoVideo(
                    video_id=f"{label}/{group}_v{copy}.mp4",
                    label=label,
                    group=group,
                    scene_seed=scene_seed,
                    width=max(48, round(width * scale / 2) * 2),
                    height=max(48, round(height * scale / 2) * 2),
                    source_width=width,
                    source_height=height,
                    fps=fps,
                    frames=frames,
                    gop=gop if copy == 0 else int(rng.integers(4, 25)),
                    crf=crf if copy == 0 else crf + int(rng.integers(6, 11)),
                )
            )
        group_idx += 1
    return planned


def scene_frames(video: DemoVideo) -> Iterator[np.ndarray]:
    """The video's frames, uint8 [H, W, 3] at its source size; re-encodes of a group see the same frames."""
    rng = np.random.default_rng(video.scene_seed)
    h, w, n = video.source_height, video.source_width, video.frames
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / h, xx / w
    colors = rng.uniform(20, 235, size=(2, 3)).astype(np.float32)
    angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0.01, 0.04)
    blobs = [
        (rng.uniform(0, 1, 2), rng.uniform(-0.02, 0.02, 2), rng.uniform(0.06, 0.14), rng.uniform(0, 255, 3))
        for _ in range(3)
    ]
    face_center, face_speed = rng.uniform(0.4, 0.6, 2), rng.uniform(-0.004, 0.004, 2)
    face_radii = rng.uniform(0.18, 0.26, 2)
    skin = rng.uniform([150, 100, 80], [230, 180, 150]).astype(np.float32)
    stripe_freq, stripe_angle = rng.uniform(4, 8), rng.uniform(0, np.pi)  # cycles per frame
    alphas = rng.uniform(0.35, 0.85, n)  # the fake's flickering blend weight, per frame
    tint = rng.uniform([-50, 20, -50], [-20, 50, -20]).astype(np.float32)
    along = np.cos(stripe_angle) * xx + np.sin(stripe_angle) * yy
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * stripe_freq * along)
    foreign = stripes[..., None] * 255.0 + tint
    for t in range(n):
        phase = (np.cos(angle) * xx + np.sin(angle) * yy + speed * t) % 1.0
        img = colors[0] + (colors[1] - colors[0]) * phase[..., None]
        for pos, vel, radius, color in blobs:
            cy, cx = (pos + vel * t) % 1.0
            inside = ((yy - cy) ** 2 + (xx - cx) ** 2) < radius**2
            img[inside] = color
        cy, cx = face_center + face_speed * t
        dist = ((yy - cy) / face_radii[0]) ** 2 + ((xx - cx) / face_radii[1]) ** 2
        face = dist < 1.0
        shade = (1.0 - 0.35 * dist)[..., None]
        img[face] = (skin * shade)[face]
        if video.label == "fake":
            img[face] = (1 - alphas[t]) * img[face] + alphas[t] * foreign[face]
        img += rng.normal(0, 3.0, size=img.shape).astype(np.float32)
        yield np.clip(img, 0, 255).astype(np.uint8)


def encode_video(video: DemoVideo) -> bytes:
    """The video as MP4/H.264 bytes, encoded single-threaded with bit-exact flags (reproducible)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        # One thread, and no macroblock tree: with it, x264 output varies from run to run at sizes that are
        # not multiples of 16 (it reads uninitialised padding).
        options = {"crf": str(video.crf), "threads": "1", "preset": "veryfast", "x264-params": "mbtree=0"}
        stream = container.add_stream("libx264", rate=video.fps, options=options)
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        stream.codec_context.gop_size = video.gop
        stream.codec_context.thread_count = 1
        stream.codec_context.time_base = Fraction(1) / video.fps
        for index, rgb in enumerate(scene_frames(video)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if (video.width, video.height) != (video.source_width, video.source_height):
                frame = frame.reformat(width=video.width, height=video.height)
            frame.pts, frame.time_base = index, stream.codec_context.time_base  # explicit: reproducible
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, FIXED_MTIME, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def make_demo_dataset(
    out_dir: str | os.PathLike[str],
    *,
    videos: int,
    seed: int,
    memory_log: str | os.PathLike[str] | None = None,
) -> list[dict]:
    """Write `out_dir/fvc_demo.tar.gz` (the encoded videos) and `out_dir/manifest.csv` (one row per video,
    url = `fvc_demo.tar.gz#<video_id>`); return the manifest rows. Both files appear atomically."""
    if videos < 2:
        raise ValueError(f"demo dataset needs at least 2 videos (one per label), got {videos}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    memory = MemoryLog(memory_log, "demo_data")
    memory.mark("start", videos=videos, seed=seed)
    archive, manifest = out_dir / ARCHIVE_NAME, out_dir / MANIFEST_NAME
    rows = []
    with (
        atomic_open(archive) as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for video in progress(plan_videos(videos, seed), desc="demo videos", unit="video"):
            data = encode_video(video)
            tar.addfile(_tar_info(video.video_id, len(data)), io.BytesIO(data))
            rows.append(
                {
                    "video_id": video.video_id,
                    "url": f"{ARCHIVE_NAME}#{video.video_id}",
                    "label": video.label,
                    "group": video.group,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                }
            )
            memory.mark("video", full=False, video_id=video.video_id, bytes=len(data))
    with atomic_open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    memory.mark("end", videos=len(rows), archive_bytes=archive.stat().st_size)
    return rows
