"""Memory log: one JSON line per point, with RSS/USS/peak that follow real allocations."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np

from fvc.memory import MemoryLog, snapshot


def test_snapshot_has_process_figures() -> None:
    snap = snapshot()
    assert snap["rss_mb"] > 10
    assert snap["uss_mb"] > 0
    assert snap["peak_rss_mb"] >= snap["rss_mb"] * 0.9


def test_log_appends_json_lines_with_extra_fields(tmp_path: Path) -> None:
    gc.collect()  # earlier tests' garbage must not be freed between the two marks
    log = MemoryLog(tmp_path / "sub" / "job.memory.jsonl", stage="test")
    log.mark("start")
    block = np.ones(64 * 1024 * 1024, dtype=np.uint8)  # 64 MB, touched
    log.mark("allocated", video="a.mp4")
    del block
    lines = [json.loads(line) for line in (tmp_path / "sub" / "job.memory.jsonl").read_text().splitlines()]
    assert [line["point"] for line in lines] == ["start", "allocated"]
    assert lines[1]["video"] == "a.mp4" and lines[1]["stage"] == "test"
    assert lines[1]["rss_mb"] - lines[0]["rss_mb"] > 50
    assert lines[1]["peak_rss_mb"] >= lines[1]["rss_mb"] - 1


def test_log_without_path_only_returns() -> None:
    record = MemoryLog(None).mark("x", step=3)
    assert record["step"] == 3 and "rss_mb" in record


def test_peak_is_this_process_not_its_parent() -> None:
    """A child of a big parent reports its own small peak (ru_maxrss would carry the parent's over exec)."""
    import subprocess
    import sys

    code = (
        "import subprocess, sys, numpy as np\n"
        "a = np.ones(300 * 1024 * 1024, dtype=np.uint8)\n"
        "out = subprocess.run([sys.executable, '-c', 'from fvc.memory import snapshot; "
        'print(snapshot()["peak_rss_mb"])\'], capture_output=True, text=True, check=True).stdout\n'
        "print(out.strip())\n"
    )
    child_peak = float(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert child_peak < 200
