"""Augment speed: fvc's `augment_all` beside a straightforward peer, at 50 and 400 demo videos.

The peer does per video what a plain script would: open it once with PyAV, list its packet timestamps,
and per clip seek to each needed frame's keyframe and decode forward to it, resize while converting to RGB,
apply the same kinds of augmentation (crop, flip, colour jitter, blur, JPEG; torch and kornia), save the clip
with safetensors and append a CSV row (no journal, no fsync, no memory log). Both run the same clip settings
on the same videos (`fvc.data.demo`, listed cyclically: `setups.py`), each case in a fresh
interpreter with one torch thread (`fresh.py`: videos/s and the child's own peak RSS). A last fresh run of
fvc under cProfile says where its time goes. Target: fvc >= 0.8x the peer's videos/s.

Usage: .venv/bin/python benchmarks/augment_speed.py [--sizes 50 400] [--repeat 1] [--distinct 60]
    [--workdir DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import io
import math
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from fresh import run_fresh
from setups import CLIP, index_subsets, run_augment

TARGET = 0.8


def fvc_case(spec: dict) -> dict:
    """fvc's augment stage over the index in `spec`, with its memory log, journal and atomic clip files."""
    return run_augment(spec)


def fvc_profile(spec: dict) -> dict:
    """`fvc_case` under cProfile: the functions with the most total time, and fvc's own top calls."""
    profile = cProfile.Profile()
    profile.enable()
    result = run_augment(spec)
    profile.disable()
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text).sort_stats("tottime")
    stats.print_stats(spec.get("top", 15))
    return {**result, "profile": text.getvalue()}


def _peer_augment(frames: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    import torch
    from kornia.enhance import (
        adjust_brightness,
        adjust_contrast,
        adjust_hue,
        adjust_saturation,
        jpeg_codec_differentiable,
    )
    from kornia.filters import gaussian_blur2d
    from torch.nn.functional import interpolate

    height, width = frames.shape[1:3]
    area, aspect = rng.uniform(0.5, 1.0), math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw, ch = min(1.0, math.sqrt(area * aspect)), min(1.0, math.sqrt(area / aspect))
    x0, y0 = rng.uniform(0, 1 - cw), rng.uniform(0, 1 - ch)
    left, top = round(x0 * width), round(y0 * height)
    right, bottom = max(left + 1, round((x0 + cw) * width)), max(top + 1, round((y0 + ch) * height))
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(frames[:, top:bottom, left:right]))
        x = x.permute(0, 3, 1, 2).float() / 255
        x = interpolate(x, size=(size, size), mode="bilinear", antialias=True).clamp(0, 1)
        if rng.random() < 0.5:
            x = x.flip(-1)
        if rng.random() < 0.8:
            x = adjust_brightness(x, rng.uniform(-0.15, 0.15))
            x = adjust_contrast(x, rng.uniform(0.8, 1.2))
            x = adjust_saturation(x, rng.uniform(0.7, 1.3))
            x = adjust_hue(x, rng.uniform(-0.2, 0.2)).clamp(0, 1)
        if rng.random() < 0.3:
            sigma = rng.uniform(0.3, 1.2)
            kernel = 2 * math.ceil(2 * sigma) + 1
            x = gaussian_blur2d(x, (kernel, kernel), (sigma, sigma))
        if rng.random() < 0.3:
            x = jpeg_codec_differentiable(x, torch.tensor([rng.uniform(30, 90)]))
        return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _peer_decode(
    container: Any, stream: Any, pts: list[int], keys: list[int], indices: np.ndarray, size: int
) -> np.ndarray:
    """Seek to each target's keyframe when it lies past the decoder, decode forward to the target's pts."""
    import bisect

    out, frames, last = [], None, None
    for index in indices:
        target = pts[index]
        key = keys[bisect.bisect_right(keys, target) - 1]
        if frames is None or (last is not None and key > last):
            container.seek(key, stream=stream, backward=True)
            frames = container.decode(stream)
        for frame in frames:
            last = frame.pts
            if frame.pts >= target:
                out.append(frame.to_ndarray(format="rgb24", width=size, height=size))
                break
    return np.stack(out)


def peer_case(spec: dict) -> dict:
    """The straightforward peer over the same index: one open per video, sparse decode, augment, save."""
    import av
    import polars as pl
    from safetensors.numpy import save_file

    out = Path(spec["out"]) / "clips"
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    videos = pl.read_parquet(spec["index"]).sort("video_id").to_dicts()
    n, size = CLIP["num_frames"], CLIP["size"]
    clips = 0
    with open(Path(spec["out"]) / "clips.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["clip_path", "label", "group", "original_video", "aug_idx", "seed"])
        for video in videos:
            with av.open(video["path"]) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                stream.codec_context.thread_count = CLIP["decode_threads"]
                pts, keys = [], []
                for packet in container.demux(stream):
                    if packet.pts is not None:
                        pts.append(packet.pts)
                        if packet.is_keyframe:
                            keys.append(packet.pts)
                pts.sort()
                keys.sort()
                count = len(pts)
                for aug_idx in range(CLIP["num_augmentations"] + 1):
                    seed = CLIP["seed"] * 1000 + aug_idx
                    rng = np.random.default_rng(seed)
                    if aug_idx == 0:
                        indices = (2 * np.arange(n) + 1) * count // (2 * n)
                        frames = _peer_decode(container, stream, pts, keys, indices, size)
                    else:
                        span = max(1.0, rng.uniform(0.6, 1.0) * count)
                        first = rng.uniform(0.0, count - span)
                        offsets = (np.arange(n) + rng.random(n)) * span / n
                        indices = np.clip(np.floor(first + offsets), 0, count - 1).astype(np.int64)
                        raw = _peer_decode(container, stream, pts, keys, indices, 2 * size)
                        frames = _peer_augment(raw, rng, size)
                    path = out / f"{video['video_id']}.aug{aug_idx}.safetensors"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    save_file({"frames": frames}, str(path), metadata={"seed": str(seed)})
                    writer.writerow([path, video["label"], video["group"], video["video_id"], aug_idx, seed])
                    clips += 1
    return {"seconds": time.perf_counter() - start, "clips": clips}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 400])
    parser.add_argument("--distinct", type=int, default=60, help="distinct demo videos to encode (60)")
    parser.add_argument("--workdir", default=None, help="keep videos and outputs here (default: a temp dir)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per case, alternating; the fastest counts"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile run of fvc")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        subsets = index_subsets(workdir, args.sizes, args.distinct)
        print(f"{'videos':>7}{'case':>6}{'clips':>7}{'videos/s':>10}{'peak RSS MB':>13}{'fvc/peer':>10}")
        ratios = []
        for n, subset in subsets:
            best: dict[str, dict] = {}
            for rep in range(args.repeat):  # fvc and the peer alternate, so both see the same machine load
                for case in ("fvc", "peer"):
                    spec = {
                        "index": str(subset),
                        "out": str(workdir / f"{case}_{n}_{rep}"),
                    }  # fresh: no resume
                    r = run_fresh(f"augment_speed:{case}_case", spec, threads=1)
                    if case not in best or r["seconds"] < best[case]["seconds"]:
                        best[case] = r
            speed = {case: n / r["seconds"] for case, r in best.items()}
            for case, r in best.items():
                ratio = f"{speed['fvc'] / speed['peer']:>10.2f}" if case == "peer" else ""
                print(f"{n:>7}{case:>6}{r['clips']:>7}{speed[case]:>10.1f}{r['peak_mb']:>13.1f}{ratio}")
            ratios.append(speed["fvc"] / speed["peer"])
        worst = min(ratios)
        print(f"\ntarget: fvc >= {TARGET}x the peer's videos/s; worst {worst:.2f}x -> ", end="")
        print("PASS" if worst >= TARGET else "FAIL")
        if not args.no_profile:
            n = args.sizes[-1]
            spec = {"index": str(workdir / f"index_{n}.parquet"), "out": str(workdir / "profile")}
            r = run_fresh("augment_speed:fvc_profile", spec, threads=1)
            print(f"\nwhere fvc spends its time ({n} videos, {r['seconds']:.1f} s under cProfile):")
            print(r["profile"])
    return 0 if worst >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
