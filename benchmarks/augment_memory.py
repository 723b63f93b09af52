"""Augment stage peak memory against the number of videos: it must stay flat (one video, one clip at a time).

Makes 60 small, varied demo videos once (`fvc.data.demo`: 96x72 to 192x144, 16-48 frames, varied GOP/CRF),
lists them cyclically under distinct ids up to 200 videos (each id gets its own augmentation seeds), indexes
them with `fvc.data.index.build_index`, then runs `augment_all` over the first 10, 50 and 200, each in
a fresh subprocess, and compares the peak RSS (ru_maxrss). Target: every peak within +-10 % of the first.

Usage: .venv/bin/python benchmarks/augment_memory.py [--sizes 10 50 200] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1024 * 1024
TOLERANCE = 0.10
CLIP = {"num_frames": 8, "size": 64, "num_augmentations": 2, "seed": 1234, "decode_threads": 2}


def _child(spec: dict) -> dict:
    """One augment run in this (fresh) process: peak RSS after imports and at the end, time, clips made."""
    from fvc.clips.augment import augment_all

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = Path(spec["out"])
    start = time.perf_counter()
    report = augment_all(
        spec["index"],
        out / "clips.csv",
        out / "rejected.csv",
        out / "clips",
        out / "clips.partial.csv",
        memory_log=out / "memory.jsonl",
        **CLIP,
    )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "peak": peak,
        "baseline": baseline,
        "seconds": seconds,
        "clips": report.clips,
        "made": report.made,
    }


def run_case(index: Path, out: Path) -> dict:
    """`_child` in a fresh interpreter; its result is the last line of stdout."""
    spec = json.dumps({"index": str(index), "out": str(out)})
    done = subprocess.run(
        [sys.executable, __file__, "--child", spec], check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout.splitlines()[-1])


def make_index(workdir: Path, videos: int, distinct: int) -> Path:
    """`distinct` demo videos extracted from their archive, listed cyclically as `videos` ids, and probed
    into a video index (parquet)."""
    import polars as pl

    from fvc.data.archive import safe_extract
    from fvc.data.demo import make_demo_dataset
    from fvc.data.index import build_index

    rows = make_demo_dataset(workdir / "demo", videos=min(videos, distinct), seed=11)
    safe_extract(workdir / "demo" / "fvc_demo.tar.gz", workdir / "videos")
    with (workdir / "videos.csv").open("w", newline="") as fh:
        columns = ["video_id", "path", "label", "group", "sha256", "size"]
        writer = csv.DictWriter(fh, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for i in range(videos):
            row, copy = rows[i % len(rows)], i // len(rows)
            path = workdir / "videos" / row["video_id"]
            writer.writerow(
                {
                    **row,
                    "video_id": f"copy{copy}/{row['video_id']}",
                    "group": f"{row['group']}_{copy}",
                    "path": str(path),
                    "label": int(row["label"] == "fake"),
                }
            )
    index = workdir / "index.parquet"
    build_index(workdir / "videos.csv", index, workdir / "index.csv", workdir / "rejected.csv")
    table = pl.read_parquet(index)
    print(
        f"{table.height} demo videos: {table['width'].min()}-{table['width'].max()} px wide, "
        f"{table['frames'].min()}-{table['frames'].max()} frames"
    )
    return index


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--distinct", type=int, default=60, help="distinct demo videos to encode (60)")
    parser.add_argument(
        "--workdir", default=None, help="keep the videos and outputs here (default: a temp dir)"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return 0
    import polars as pl

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        start = time.perf_counter()
        index = make_index(workdir, max(args.sizes), args.distinct)
        print(f"made and indexed the videos in {time.perf_counter() - start:.0f} s\n")
        full = pl.read_parquet(index)
        results = {}
        for n in args.sizes:
            subset = workdir / f"index_{n}.parquet"
            full.head(n).write_parquet(subset)
            results[n] = run_case(subset, workdir / f"out_{n}")
        first = results[args.sizes[0]]["peak"]
        header = ("videos", 7), ("clips", 7), ("peak RSS MB", 13), ("above imports MB", 18), ("vs first", 10)
        print("".join(f"{name:>{width}}" for name, width in header) + f"{'time s':>8}")
        for n, r in results.items():
            print(
                f"{n:>7}{r['clips']:>7}{r['peak'] / MB:>13.1f}{(r['peak'] - r['baseline']) / MB:>18.1f}"
                f"{r['peak'] / first:>10.3f}{r['seconds']:>8.1f}"
            )
        worst = max(abs(r["peak"] / first - 1) for r in results.values())
        ok = worst <= TOLERANCE
        print(
            f"\ntarget: peak RSS flat within +-{TOLERANCE:.0%} from {args.sizes[0]} to {args.sizes[-1]} "
            f"videos; worst {worst:+.1%} -> {'PASS' if ok else 'FAIL'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
