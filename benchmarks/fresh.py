"""Run benchmark cases in fresh interpreters and read back what they measured.

A case is a function `module:function` of the benchmarks folder taking one JSON-able dict and returning one;
the child adds its own peak RSS (`VmHWM` via `fvc.core.memory.peak_rss_bytes`, never `ru_maxrss`, which a
child inherits from its parent's peak). `run_fresh("train_speed:case", {"model": "x3d"})` runs one case.

`run_lockstep` runs several cases at once, each in its own fresh interpreter, taking turns: a case calls
`turn()` before each timed unit (an epoch, a pass) and runs only while it holds the turn, until its next
`turn()` (its untimed work between units included), while the others wait blocked. Unit i of every case is
then timed within seconds of the others', so a change in the machine's speed (another tenant of the VM, a
clock change) falls on all of them alike, and their ratio per unit is compared, not figures minutes apart.
Outside `run_lockstep`, `turn()` returns True at once.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MARK = "FRESH-RESULT "
READY = "FRESH-READY"
LOCKSTEP = "FVC_BENCH_LOCKSTEP"


def _command(target: str, spec: dict[str, Any], threads: int | None) -> list[str]:
    cmd = [sys.executable, str(HERE / "fresh.py"), target, json.dumps(spec)]
    return cmd if threads is None else [*cmd, str(threads)]


def _result(line: str) -> dict[str, Any]:
    return json.loads(line[len(MARK) :])


def run_fresh(
    target: str, spec: dict[str, Any], *, threads: int | None = None, timeout: float = 1800
) -> dict[str, Any]:
    """`target(spec)` in a new Python process (`threads` torch threads when given); its returned dict plus
    `peak_mb` (the child's VmHWM) and `wall_s`."""
    start = time.perf_counter()
    out = subprocess.run(_command(target, spec, threads), capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{target} {spec} failed:\n{out.stderr[-3000:]}")
    line = next(x for x in reversed(out.stdout.splitlines()) if x.startswith(MARK))
    return {**_result(line), "wall_s": time.perf_counter() - start}


class _Turns:
    """One lockstep child: its process, and where it stands (waiting for a turn, or finished)."""

    def __init__(self, name: str, target: str, spec: dict[str, Any], threads: int | None) -> None:
        self.name = name
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            _command(target, spec, threads),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env={**os.environ, LOCKSTEP: "1"},
        )
        self.result: dict[str, Any] | None = None

    def wait(self) -> None:
        """Until the child asks for its next turn or has finished (its result read)."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(READY):
                return
            if line.startswith(MARK):
                self.result = _result(line)
        if self.process.wait() != 0 or self.result is None:
            self.stderr.seek(0)
            raise RuntimeError(f"lockstep case {self.name} failed:\n{self.stderr.read()[-3000:]}")

    def send(self, answer: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(answer + "\n")
        self.process.stdin.flush()


def run_lockstep(
    cases: dict[str, tuple[str, dict[str, Any]]],
    *,
    threads: int | None = None,
    keep: Callable[[str, int, dict[str, list[float]]], bool] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each case `name: (target, spec)` in its own fresh process, started one after another (each set up
    before the next starts), then given turns round-robin (`turn()`), one case running at a time, until all
    have finished. `keep(name, round, seconds)`, when given, is asked before each of a case's turns after the
    first round whether it should go on, `seconds` holding every case's turns so far (seconds from its go to
    its next `turn()` or its end); a case told to stop sees `turn()` return False. Returns each case's dict
    plus `peak_mb`."""
    children: list[_Turns] = []
    try:
        for name, (target, spec) in cases.items():
            children.append(_Turns(name, target, spec, threads))
            children[-1].wait()
        rounds = 0
        seconds: dict[str, list[float]] = {child.name: [] for child in children}
        while any(child.result is None for child in children):
            for child in children:
                if child.result is not None:
                    continue
                go = rounds == 0 or keep is None or keep(child.name, rounds, seconds)
                start = time.perf_counter()
                child.send("go" if go else "stop")
                child.wait()
                if go:
                    seconds[child.name].append(time.perf_counter() - start)
            rounds += 1
        return {child.name: child.result for child in children if child.result is not None}
    finally:
        for child in children:
            if child.process.poll() is None:
                child.process.kill()
            child.process.wait()
            child.stderr.close()


def turn() -> bool:
    """Wait for this case's next turn in `run_lockstep` (True: go on; False: stop now); True at once outside
    it."""
    if not os.environ.get(LOCKSTEP):
        return True
    print(READY, flush=True)
    return sys.stdin.readline().strip() == "go"


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
