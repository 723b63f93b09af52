"""Progress in log files: whole lines, throttled, no carriage returns; a live bar on a terminal."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fvc.core.progress import INTERVAL_ENV, progress

BIN = Path(sys.executable).parent


def _demo_data(tmp_path: Path, interval_s: float, videos: int = 4) -> tuple[list[str], float]:
    """Run the demo-data stage with stderr to a file; its progress lines and the run's wall time."""
    err = tmp_path / f"stderr-{interval_s}.txt"
    env = {**os.environ, INTERVAL_ENV: str(interval_s)}
    start = time.monotonic()
    with err.open("w") as stderr:
        subprocess.run(
            [str(BIN / "fvc"), "demo-data", "--videos", str(videos), "--out-dir", str(tmp_path / "demo")],
            cwd=tmp_path,
            env=env,
            stderr=stderr,
            stdout=subprocess.DEVNULL,
            check=True,
        )
    text = err.read_text()
    assert "\r" not in text
    return [line for line in text.splitlines() if line.startswith("demo videos:")], time.monotonic() - start


@pytest.mark.slow
def test_a_stage_logs_its_progress_as_throttled_whole_lines(tmp_path: Path):
    lines, _ = _demo_data(tmp_path, interval_s=3600)
    # Throttled: the first and the last state only, each a whole line.
    assert len(lines) == 2 and "0/4" in lines[0] and "4/4" in lines[1], lines
    unthrottled, _ = _demo_data(tmp_path, interval_s=0)
    # Without the throttle every video gives its own line (and the first and last).
    assert (
        len(unthrottled) >= 5 and [f"{i}/4" in line for i, line in enumerate(unthrottled[:5])] == [True] * 5
    )


def test_lines_come_at_most_once_per_interval(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture):
    monkeypatch.setenv(INTERVAL_ENV, "0.2")
    start = time.monotonic()
    for _ in progress(range(40), desc="steps"):
        time.sleep(0.025)
    elapsed = time.monotonic() - start
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("steps:")]
    assert "\r" not in err
    assert 3 <= len(lines) <= elapsed / 0.2 + 2, (elapsed, lines)
    assert "0/40" in lines[0] and "40/40" in lines[-1]


def test_a_terminal_gets_the_live_bar():
    code = (
        "from fvc.core.progress import progress\n"
        "for _ in progress(range(3), desc='live', mininterval=0, ncols=80, nrows=24): pass"
    )
    pid, fd = pty.fork()
    if pid == 0:  # the child: stderr is the pseudo-terminal
        os.execv(sys.executable, [sys.executable, "-c", code])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    assert b"\rlive: 100%" in out
