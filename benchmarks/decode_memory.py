"""Decoding 8 frames of a textured 1080p video: fvc's sparse read against a full decode and the ffmpeg CLI.

The video is moving noise texture that H.264 cannot flatten, encoded at a realistic bitrate (~9 Mbit/s by
default), so decoding, not RGB conversion, dominates. Each case runs in a fresh interpreter
(`benchmarks/fresh.py`; peak RSS from the child's VmHWM):
1. fvc's sparse read (`fvc.data.video.decode_frames`), a full decode keeping every frame (the old pipeline),
   and the ffmpeg CLI (a `select` filter piping the same 8 frames as raw RGB; peak RSS: the ffmpeg
   process's own VmHWM) -- time, peak RSS, frames decoded per frame returned.
2. An H.264-with-B-frames AVI (no presentation timestamps: seeking cannot be trusted) -- frames decoded per
   frame returned, against the last frame asked for + 1 (the most a sequential decode needs).

Usage: .venv/bin/python benchmarks/decode_memory.py [--frames 120] [--width 1920] [--height 1080]
[--mbps 9] (the full size: --frames 300)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fresh import run_fresh  # noqa: E402


def make_textured(path: Path, frames: int, width: int, height: int, mbps: float) -> float:
    """Moving noise texture (a noise field panned by 3 px per frame plus fresh fine noise) as H.264 (GOP 50,
    B-frames) at `mbps` Mbit/s; returns the bitrate reached."""
    import av

    rng = np.random.default_rng(0)
    field = rng.integers(0, 256, (height + 8, width + 3 * frames + 8, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(
            "libx264", rate=25, options={"preset": "ultrafast", "x264-params": "scenecut=0"}
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = int(mbps * 1e6)
        stream.codec_context.gop_size, stream.codec_context.max_b_frames = 50, 2
        stream.time_base = Fraction(1, 25)
        for i in range(frames):
            image = field[4 : 4 + height, 3 * i : 3 * i + width]
            image = (image // 2 + rng.integers(0, 64, image.shape, dtype=np.uint8)).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path.stat().st_size * 8 / (frames / 25) / 1e6


def case(spec: dict) -> dict:
    """One case, run in a fresh interpreter: time, frames decoded, returned shape."""
    start = time.perf_counter()
    if spec["case"] == "fvc sparse":
        from fvc.data.video import decode_frames

        _, stats = decode_frames(spec["path"], spec["indices"])
        decoded, fallback = stats.frames_decoded, stats.sequential_fallback
    elif spec["case"] == "full decode":
        import av

        with av.open(spec["path"]) as container:
            container.streams.video[0].thread_type = "AUTO"
            container.streams.video[0].codec_context.thread_count = 2
            every = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        np.stack([every[i] for i in spec["indices"]])
        decoded, fallback = len(every), False
    else:
        import imageio_ffmpeg

        wanted = "+".join(f"eq(n\\,{i})" for i in spec["indices"])
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-threads", "2", "-i", spec["path"]]
        cmd += [
            "-vf",
            f"select={wanted}",
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ]
        raw, ffmpeg_mb = run_watching_peak(cmd)
        shape = (len(spec["indices"]), spec["height"], spec["width"], 3)
        assert len(raw) == np.prod(shape), f"ffmpeg returned {len(raw)} bytes, not {shape}"
        decoded = spec["frames"]  # the select filter sees every frame: ffmpeg decodes them all
        return {"seconds": time.perf_counter() - start, "decoded": decoded, "ffmpeg_mb": ffmpeg_mb}
    return {"seconds": time.perf_counter() - start, "decoded": decoded, "fallback": fallback}


def run_watching_peak(cmd: list[str]) -> tuple[bytes, float]:
    """Run `cmd`, returning its stdout and its own peak RSS in MB (its VmHWM, polled until it exits)."""
    with tempfile.TemporaryFile() as sink:
        process = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.PIPE)
        status, peak_kb = Path(f"/proc/{process.pid}/status"), 0
        while process.poll() is None:
            try:
                hwm = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
                peak_kb = max(peak_kb, int(hwm.split()[1]))
            except (OSError, StopIteration):
                pass
            time.sleep(0.005)
        if process.returncode:
            raise RuntimeError(f"{cmd[0]} failed: {process.stderr.read().decode()[-2000:]}")
        sink.seek(0)
        return sink.read(), peak_kb / 1024


def textured(frames: int, width: int, height: int, mbps: float, workdir: Path) -> None:
    path = workdir / "textured.mp4"
    reached = make_textured(path, frames, width, height, mbps)
    indices = np.linspace(0, frames - 1, 8).round().astype(int).tolist()
    print(f"1. 8 of {frames} frames, textured {width}x{height} H.264 at {reached:.1f} Mbit/s: {indices}")
    spec = {"path": str(path), "indices": indices, "frames": frames, "width": width, "height": height}
    results = {name: run_fresh("decode_memory:case", {**spec, "case": name}, threads=1)
               for name in ("fvc sparse", "full decode", "ffmpeg CLI")}  # fmt: skip
    print(f"{'case':<14}{'time s':>8}{'peak RSS MB':>13}{'decoded':>9}{'decoded/returned':>18}")
    for name, r in results.items():
        print(
            f"{name:<14}{r['seconds']:>8.2f}{r['peak_mb']:>13.0f}{r['decoded']:>9}{r['decoded'] / 8:>18.1f}"
        )
    sparse = results["fvc sparse"]
    for peer in ("full decode", "ffmpeg CLI"):
        r = results[peer]
        print(
            f"fvc sparse vs {peer}: time {sparse['seconds'] / r['seconds']:.2f}x, "
            f"peak RSS {sparse['peak_mb'] / r['peak_mb']:.2f}x"
        )


def untrusted_timestamps(workdir: Path) -> None:
    from video_factory import make_video

    path = make_video(workdir / "b2.avi", 164, gop=30, bframes=2)
    indices = np.linspace(0, 120, 8).round().astype(int).tolist()
    r = run_fresh("decode_memory:case", {"path": str(path), "indices": indices, "case": "fvc sparse"})
    print(
        f"\n2. H.264 with B-frames in AVI (164 frames), 8 frames up to frame 120: {r['decoded']} decoded, "
        f"{r['decoded'] / 8:.1f} per frame returned (sequential needs 121; fell back: {r['fallback']})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--mbps", type=float, default=9.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        textured(args.frames, args.width, args.height, args.mbps, Path(tmp))
        untrusted_timestamps(Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
