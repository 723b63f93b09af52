"""Start-up cost of each stage: the seconds its module's imports take in a fresh interpreter, beside the
floor they cannot go below (a bare interpreter, and `import torch` for the stages that compute with it).

Each stage module is imported with `python -X importtime` in a new process, `--repeat` times (the fastest
counts: the machine is shared); the table gives the import seconds, the process's wall seconds and the
heaviest top-level packages it loaded. `fvc --help` is timed as a whole command. Target: <= 3 s per stage.

Usage: .venv/bin/python benchmarks/startup.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

STAGES = (
    "fvc.data.download",
    "fvc.data.index",
    "fvc.clips.augment",
    "fvc.clips.folds",
    "fvc.train.training",
    "fvc.infer.inference",
    "fvc.slurm.audit",
)
PEERS = ("torch",)  # the floor of the stages that need it at once
TARGET_S = 3.0
LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


def import_once(module: str) -> tuple[float, float, list[tuple[str, float]]]:
    """Import seconds of `module` in a fresh interpreter, its wall seconds, and the packages it loaded by
    their own cumulative import seconds (a package imported by another counts in both)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - start
    packages: dict[str, float] = {}
    total = 0.0
    for match in LINE.finditer(done.stderr):
        cumulative, indent, name = int(match[2]) / 1e6, len(match[3]), match[4]
        if indent == 0:  # a top-level import of this process
            total += cumulative
        if "." not in name and name != "fvc" and not name.startswith("_"):  # a package's own line
            packages[name] = max(packages.get(name, 0.0), cumulative)
    return total, wall, sorted(packages.items(), key=lambda kv: -kv[1])


def best_of(repeat: int, run: Callable[[], tuple[float, ...]]) -> tuple:
    """The fastest of `repeat` runs (by their first figure)."""
    return min((run() for _ in range(repeat)), key=lambda r: r[0])


def command_once(argv: list[str]) -> tuple[float]:
    """Wall seconds of one command."""
    start = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True)
    return (time.perf_counter() - start,)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="fresh imports per stage; the fastest counts")
    args = parser.parse_args()
    bare = best_of(args.repeat, lambda: command_once([sys.executable, "-c", "pass"]))[0]
    print(f"bare interpreter: {bare:.2f} s wall\n")
    print(f"{'module':<22}{'import s':>9}{'wall s':>8}  heaviest packages (import s)")
    worst = 0.0
    for module in (*PEERS, *STAGES):
        total, wall, packages = best_of(args.repeat, lambda m=module: import_once(m))
        heavy = ", ".join(f"{name} {seconds:.2f}" for name, seconds in packages[:4])
        label = f"{module} (peer)" if module in PEERS else module
        print(f"{label:<22}{total:>9.2f}{wall:>8.2f}  {heavy}")
        if module in STAGES:
            worst = max(worst, total)
    fvc = shutil.which("fvc") or str(Path(sys.executable).with_name("fvc"))
    help_s = best_of(args.repeat, lambda: command_once([fvc, "--help"]))[0]
    print(f"{'fvc --help':<22}{'':>9}{help_s:>8.2f}")
    ok = worst <= TARGET_S
    verdict = "PASS" if ok else "FAIL"
    print(f"\ntarget: every stage's imports <= {TARGET_S:.0f} s; worst {worst:.2f} s -> {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
