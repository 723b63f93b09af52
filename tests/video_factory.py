"""Synthetic test videos made with PyAV, whose every frame shows its own index.

Each frame is a 4x4 grid of black/white blocks spelling the frame index in binary (16 bits, row-major, most
significant first) over a background colour that also changes per frame, so a decoded frame says which frame
it is even after lossy coding and resizing:

    make_video(path, 40, size=(64, 48), fps=25, gop=10, bframes=2)
    frames = read_frames(path, [3, 17])
    assert [frame_index(f) for f in frames] == [3, 17]
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

GRID = 4
BITS = GRID * GRID
# Tick pattern of a variable frame rate video: frame durations in units of 1 / (4 * fps), mean 4.
VFR_TICKS = (2, 6, 3, 5, 1, 7, 4, 4)
CONTAINERS = {
    ".mp4": "mp4", ".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".mov": "mov", ".h264": "h264",
}  # fmt: skip
ENCODER_OPTIONS = {"libx264": {"x264-params": "scenecut=0"}, "libx265": {"x265-params": "log-level=error"}}


def frame_pattern(index: int, width: int, height: int) -> np.ndarray:
    """RGB uint8 [height, width, 3]: the index in binary as a 4x4 block grid over a per-frame colour."""
    if not 0 <= index < 1 << BITS:
        raise ValueError(f"frame index {index} does not fit in {BITS} bits")
    colour = np.array([(index * 37) % 128 + 64, (index * 91) % 128 + 64, (index * 53) % 128 + 64], np.uint8)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = colour
    rows = np.linspace(0, height, GRID + 1).astype(int)
    cols = np.linspace(0, width, GRID + 1).astype(int)
    for bit in range(BITS):
        r, c = divmod(bit, GRID)
        value = 255 if index >> (BITS - 1 - bit) & 1 else 0
        # Blocks inset by a quarter so that block edges blur only into the background.
        y0, y1 = rows[r] + (rows[r + 1] - rows[r]) // 4, rows[r + 1] - (rows[r + 1] - rows[r]) // 4
        x0, x1 = cols[c] + (cols[c + 1] - cols[c]) // 4, cols[c + 1] - (cols[c + 1] - cols[c]) // 4
        image[y0:y1, x0:x1] = value
    return image


def frame_index(image: np.ndarray) -> int:
    """Read back the index that `frame_pattern` drew into a (decoded, possibly resized) RGB frame."""
    height, width = image.shape[:2]
    grey = image.astype(np.float32).mean(axis=2)
    index = 0
    for bit in range(BITS):
        r, c = divmod(bit, GRID)
        y = int((r + 0.5) * height / GRID)
        x = int((c + 0.5) * width / GRID)
        index = index << 1 | int(grey[y, x] > 160)
    return index


class _WriteOnly:
    """A file wrapper without seek(), so that a muxer cannot go back to fill in header fields."""

    def __init__(self, sink: BinaryIO) -> None:
        self.write = sink.write


def make_video(
    path: str | Path,
    frames: int,
    size: tuple[int, int] = (64, 48),
    fps: int = 25,
    gop: int = 12,
    bframes: int = 0,
    codec: str = "libx264",
    container: str | None = None,
    vfr: bool = False,
    streamed: bool = False,
    options: dict[str, str] | None = None,
    rotation: int = 0,
) -> Path:
    """Encode `frames` index-pattern frames of `size` = (width, height) to `path`, a keyframe every `gop`
    frames (scene-cut keyframes off for x264) and up to `bframes` B-frames in a row. The container format
    follows the suffix unless given. `vfr` gives frames irregular durations (VFR_TICKS) around 1 / fps.
    `streamed` writes through a sink that cannot seek, as a live stream does: a WebM/MKV then states neither
    frame count nor duration. `options` go to the encoder (e.g. {"preset": "veryfast"} for libx264).
    `rotation` (counter-clockwise degrees, a multiple of 90) stores each frame turned back by it and sets the
    display matrix, as a phone does: displayed upright, the frames show their index at `size`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    fmt = container or CONTAINERS.get(path.suffix.lower())
    ticks_per_frame = 4 if vfr else 1
    time_base = Fraction(1, fps * ticks_per_frame)
    options = {**ENCODER_OPTIONS.get(codec, {}), **(options or {})}
    with ExitStack() as stack:
        target = _WriteOnly(stack.enter_context(path.open("wb"))) if streamed else str(path)
        out = stack.enter_context(av.open(target, mode="w", format=fmt))
        stream = out.add_stream(codec, rate=fps, options=options)
        turns = rotation // 90 % 4
        stream.width, stream.height = (height, width) if turns % 2 else (width, height)
        if turns:
            stream.set_display_rotation(rotation)
        stream.pix_fmt = "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.codec_context.gop_size = gop
        stream.codec_context.max_b_frames = bframes
        out.start_encoding()  # writes the header even when no frame follows
        pts = 0
        for i in range(frames):
            stored = np.ascontiguousarray(np.rot90(frame_pattern(i, width, height), -turns))
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts = pts
            frame.time_base = time_base
            pts += VFR_TICKS[i % len(VFR_TICKS)] if vfr else 1
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def make_audio(path: str | Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    """An audio-only file (a sine tone; codec and container from the suffix, e.g. .m4a, .mp3, .wav)."""
    path = Path(path)
    codec = {".m4a": "aac", ".mp4": "aac", ".mp3": "mp3", ".wav": "pcm_s16le", ".ogg": "libopus"}[path.suffix]
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=rate if codec != "libopus" else 48000)
        stream.layout = "mono"
        sample_rate = stream.codec_context.sample_rate
        samples = int(seconds * sample_rate)
        t = np.arange(samples) / sample_rate
        chunk = 1024
        for start in range(0, samples, chunk):
            tone = np.sin(2 * np.pi * 440 * t[start : start + chunk])
            samples_i16 = (tone * 3000).astype(np.int16)[None, :]
            frame = av.AudioFrame.from_ndarray(samples_i16, format="s16", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def decode_all(
    path: str | Path, size: tuple[int, int] | None = None, keep: Iterable[int] | None = None
) -> dict[int, np.ndarray] | list[np.ndarray]:
    """Plain sequential decode to RGB (the reference that sparse decoding must match): every frame as a
    list, or only the frames numbered in `keep` as {index: frame}."""
    kwargs = {} if size is None else {"width": size[0], "height": size[1]}
    wanted = None if keep is None else set(keep)
    with av.open(str(path)) as container:
        frames = enumerate(container.decode(video=0))
        if wanted is None:
            return [f.to_ndarray(format="rgb24", **kwargs) for _, f in frames]
        return {i: f.to_ndarray(format="rgb24", **kwargs) for i, f in frames if i in wanted}


def make_two_stream_video(path: str | Path, frames: int, main: int = 1, default: bool = True) -> Path:
    """Two H.264 video streams: stream `main` at 64x48 shows the frame indices, the other, 32x24, shows
    index + 1000. With `default`, only the main stream carries the default disposition; without, neither
    does (Matroska: the muxer would otherwise mark the first)."""
    path = Path(path)
    options = {} if default else {"default_mode": "passthrough"}
    with av.open(str(path), mode="w", options=options) as out:
        streams = []
        for s in range(2):
            stream = out.add_stream("libx264", rate=25, options=ENCODER_OPTIONS["libx264"])
            stream.width, stream.height = (64, 48) if s == main else (32, 24)
            stream.pix_fmt = "yuv420p"
            stream.disposition = av.stream.Disposition.default if default and s == main else 0
            streams.append(stream)
        for i in range(frames):
            for s, stream in enumerate(streams):
                shown = i if s == main else i + 1000
                frame = av.VideoFrame.from_ndarray(frame_pattern(shown, stream.width, stream.height), "rgb24")
                frame.pts = i
                out.mux(stream.encode(frame))
        for stream in streams:
            out.mux(stream.encode(None))
    return path


def make_still(path: str | Path, codec: str = "png") -> Path:
    """One still image (PNG or JPEG, as `codec` says) written to `path` whatever its suffix (e.g. `.mp4`)."""
    path = Path(path)
    fmt = {"png": "image2pipe", "mjpeg": "image2pipe"}[codec]
    with av.open(str(path), mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=1)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "rgb24" if codec == "png" else "yuvj420p"
        frame = av.VideoFrame.from_ndarray(frame_pattern(0, 64, 48), format="rgb24")
        out.mux(stream.encode(frame.reformat(format=stream.pix_fmt)))
        out.mux(stream.encode(None))
    return path


def damage_frame(path: str | Path, index: int, stream: int = 0) -> Path:
    """Overwrite the bytes of the packet holding frame `index` (in packet order) with noise, in place."""
    path = Path(path)
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(video=stream) if p.size]
        position, size = packets[index].pos, packets[index].size
    data = bytearray(path.read_bytes())
    noise = np.random.default_rng(index).integers(0, 256, size, dtype=np.uint8).tobytes()
    data[position + 8 : position + size] = noise[8:]
    path.write_bytes(bytes(data))
    return path
