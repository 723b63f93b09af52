"""Run one benchmark case in a fresh interpreter and read back what it measured.

A case is a function `module:function` of the benchmarks folder taking one JSON-able dict and returning one;
the child adds its own peak RSS (`VmHWM` via `fvc.core.memory.peak_rss_bytes`, never `ru_maxrss`, which a
child inherits from its parent's peak) and the seconds its imports took. Usage from a benchmark:
`run_fresh("train_speed:case", {"model": "x3d"})`.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MARK = "FRESH-RESULT "


def run_fresh(
    target: str, spec: dict[str, Any], *, threads: int | None = None, timeout: float = 1800
) -> dict[str, Any]:
    """`target(spec)` in a new Python process (`threads` torch threads when given); its returned dict plus
    `peak_mb` (the child's VmHWM) and `wall_s`."""
    cmd = [sys.executable, str(HERE / "fresh.py"), target, json.dumps(spec)]
    if threads is not None:
        cmd.append(str(threads))
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{target} {spec} failed:\n{out.stderr[-3000:]}")
    line = next(x for x in reversed(out.stdout.splitlines()) if x.startswith(MARK))
    return {**json.loads(line[len(MARK) :]), "wall_s": time.perf_counter() - start}


def _child(target: str, spec: str, threads: str | None) -> None:
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent / "tests"))
    if threads is not None:
        import torch

        torch.set_num_threads(int(threads))
    module, function = target.split(":")
    result = getattr(importlib.import_module(module), function)(json.loads(spec))
    from fvc.core.memory import MB, peak_rss_bytes

    print(MARK + json.dumps({**result, "peak_mb": peak_rss_bytes() / MB}), flush=True)


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
