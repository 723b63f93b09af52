"""Augment stage peak memory against the number of videos: it must stay flat (one video, one clip at a time).

Makes 60 small, varied demo videos once (`fvc.data.demo`: 96x72 to 192x144, 16-48 frames, varied GOP/CRF),
lists them cyclically under distinct ids up to 400 videos (each id gets its own augmentation seeds), indexes
them with `fvc.data.index.build_index`, then runs `augment_all` over the first 10, 50 and 400, and beside it
the straightforward peer of `augment_speed.py`, each case in a fresh interpreter with one torch thread
(`fresh.py`: the child's own peak RSS from VmHWM, not an inherited `ru_maxrss`). Target: every fvc peak within
+-10 % of the first.

Usage: .venv/bin/python benchmarks/augment_memory.py [--sizes 10 50 400] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

from fresh import run_fresh

TOLERANCE = 0.10
CLIP = {"num_frames": 8, "size": 64, "num_augmentations": 2, "seed": 1234, "decode_threads": 2}


def fvc_case(spec: dict) -> dict:
    """One augment run in this (fresh) process: the peak after imports (MB), time, clips made."""
    from fvc.clips.augment import augment_all
    from fvc.core.memory import MB, peak_rss_bytes

    baseline = peak_rss_bytes() / MB
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
    return {"baseline_mb": baseline, "seconds": seconds, "clips": report.clips, "made": report.made}


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
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 400])
    parser.add_argument("--distinct", type=int, default=60, help="distinct demo videos to encode (60)")
    parser.add_argument(
        "--workdir", default=None, help="keep the videos and outputs here (default: a temp dir)"
    )
    args = parser.parse_args()
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
            results[n] = {
                case: run_fresh(
                    f"{module}:{case}_case",
                    {"index": str(subset), "out": str(workdir / f"{case}_{n}")},
                    threads=1,
                )
                for case, module in (("fvc", "augment_memory"), ("peer", "augment_speed"))
            }
        first = results[args.sizes[0]]["fvc"]["peak_mb"]
        header = (
            ("videos", 7), ("clips", 7), ("fvc peak MB", 13), ("above imports MB", 18), ("vs first", 10),
            ("fvc s", 8), ("peer peak MB", 14), ("peer s", 8),
        )  # fmt: skip
        print("".join(f"{name:>{width}}" for name, width in header))
        for n, r in results.items():
            fvc, peer = r["fvc"], r["peer"]
            print(
                f"{n:>7}{fvc['clips']:>7}{fvc['peak_mb']:>13.1f}{fvc['peak_mb'] - fvc['baseline_mb']:>18.1f}"
                f"{fvc['peak_mb'] / first:>10.3f}{fvc['seconds']:>8.1f}{peer['peak_mb']:>14.1f}"
                f"{peer['seconds']:>8.1f}"
            )
        worst = max(abs(r["fvc"]["peak_mb"] / first - 1) for r in results.values())
        ok = worst <= TOLERANCE
        print(
            f"\ntarget: fvc's peak RSS flat within +-{TOLERANCE:.0%} from {args.sizes[0]} to "
            f"{args.sizes[-1]} videos; worst {worst:+.1%} -> {'PASS' if ok else 'FAIL'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
