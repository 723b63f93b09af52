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
import sys
import tempfile
from pathlib import Path

from fresh import run_fresh
from setups import index_subsets, run_augment

TOLERANCE = 0.10


def fvc_case(spec: dict) -> dict:
    """One augment run in this (fresh) process: the peak after imports (MB), time, clips made."""
    return run_augment(spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 400])
    parser.add_argument("--distinct", type=int, default=60, help="distinct demo videos to encode (60)")
    parser.add_argument(
        "--workdir", default=None, help="keep the videos and outputs here (default: a temp dir)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        results = {}
        for n, subset in index_subsets(workdir, args.sizes, args.distinct):
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
