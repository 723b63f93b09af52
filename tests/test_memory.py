"""Memory log: one JSON line per point, with RSS/USS/peak that follow real allocations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fvc.core.memory import GLIBC, MemoryLog, snapshot


def test_snapshot_has_process_figures() -> None:
    snap = snapshot()
    assert snap["rss_mb"] > 10
    assert snap["uss_mb"] > 0
    assert snap["peak_rss_mb"] >= snap["rss_mb"] * 0.9


def test_log_appends_json_lines_with_extra_fields(tmp_path: Path) -> None:
    """In a fresh process, so the 64 MB cannot reuse pages an earlier test left resident in the heap."""
    path = tmp_path / "sub" / "job.memory.jsonl"
    code = (
        "import sys, numpy as np\n"
        "from fvc.core.memory import MemoryLog\n"
        "log = MemoryLog(sys.argv[1], stage='test')\n"
        "log.mark('start')\n"
        "block = np.ones(64 * 1024 * 1024, dtype=np.uint8)\n"
        "log.mark('allocated', video='a.mp4')\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
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
        "out = subprocess.run([sys.executable, '-c', 'from fvc.core.memory import snapshot; "
        'print(snapshot()["peak_rss_mb"])\'], capture_output=True, text=True, check=True).stdout\n'
        "print(out.strip())\n"
    )
    child_peak = float(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert child_peak < 200


def test_quick_mark_logs_rss_and_peak_only(tmp_path: Path) -> None:
    """`full=False` points (one per video) follow real allocations through RSS and peak, and leave out USS,
    cgroup and CUDA, whose reads cost milliseconds; full points keep every key."""
    path = tmp_path / "job.memory.jsonl"
    code = (
        "import sys, numpy as np\n"
        "from fvc.core.memory import MemoryLog\n"
        "log = MemoryLog(sys.argv[1], stage='test')\n"
        "log.mark('start')\n"
        "log.mark('video', full=False, number=0)\n"
        "block = np.ones(64 * 1024 * 1024, dtype=np.uint8)\n"
        "log.mark('video', full=False, number=1)\n"
        "del block\n"
        "log.mark('end')\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    start, before, after, end = (json.loads(line) for line in path.read_text().splitlines())
    assert {"uss_mb", "cgroup_current_mb", "cgroup_peak_mb"} <= set(start) and set(start) == set(end)
    assert set(before) == {"time", "stage", "point", "pid", "rss_mb", "peak_rss_mb", "number"}
    assert after["rss_mb"] - before["rss_mb"] > 50 and after["peak_rss_mb"] >= after["rss_mb"] - 1
    assert end["peak_rss_mb"] >= after["rss_mb"] - 1 and end["rss_mb"] < after["rss_mb"] - 50


def test_stages_mark_each_video_quickly_and_their_ends_fully(tmp_path: Path) -> None:
    """demo-data, download, index and augment log one cheap mark per video (RSS and peak only) and full marks
    (USS, cgroup) at their start and end."""
    for stage, *options in (
        ("demo-data", "--videos", "4"),
        ("download",),
        ("index",),
        ("augment", "--num-augmentations", "0"),
    ):
        command = [sys.executable, "-m", "fvc.cli", stage, *options, "--memory-log", f"{stage}.jsonl"]
        subprocess.run(command, cwd=tmp_path, check=True, capture_output=True)
        marks = [json.loads(line) for line in (tmp_path / f"{stage}.jsonl").read_text().splitlines()]
        videos = [m for m in marks if m["point"] == "video"]
        assert len(videos) == 4, stage
        assert all("uss_mb" not in m and m["rss_mb"] > 0 for m in videos), stage
        assert [m["point"] for m in marks if "uss_mb" in m][:1] == ["start"] and "uss_mb" in marks[-1], stage


GLIBC_SCRIPT = """
import sys, numpy as np
from fvc.core.memory import fix_mmap_threshold, release_freed_memory, quick_snapshot

if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
first = np.ones(16 * 1024 * 1024, dtype=np.uint8)
del first  # glibc's dynamic threshold now rises above 8 MB
before = quick_snapshot()["rss_mb"]
pairs = [(np.ones(8 * 1024 * 1024, dtype=np.uint8), np.ones(25_000)) for _ in range(6)]
spacers = [spacer for _, spacer in pairs]  # 200 KB each, from the top: the blocks cannot merge into it
del pairs
kept = quick_snapshot()["rss_mb"] - before
release_freed_memory()
print(kept, quick_snapshot()["rss_mb"] - before)
"""


@pytest.mark.skipif(GLIBC is None, reason="glibc's allocator only")
def test_fixed_mmap_threshold_returns_big_frees_and_trim_returns_the_heap() -> None:
    """After a first big free glibc serves later 8 MB buffers from its heap, where they stay resident once
    freed (48 MB here) until trimmed; with the threshold fixed, each is unmapped when freed."""

    def kept_and_trimmed(mode: str) -> list[float]:
        out = subprocess.run(
            [sys.executable, "-c", GLIBC_SCRIPT, mode], check=True, capture_output=True, text=True
        )
        return [float(x) for x in out.stdout.split()]

    kept, trimmed = kept_and_trimmed("dynamic")
    assert kept > 40 and trimmed < 8, (kept, trimmed)
    kept, _ = kept_and_trimmed("fixed")
    assert kept < 8, kept


class FakeCuda:
    """torch.cuda's memory counters as a GPU job sees them (this machine has none): a peak that lasts until
    reset_peak_memory_stats."""

    def __init__(self) -> None:
        self.allocated, self.peak, self.resets = 0, 0, 0

    def use(self, mb: int) -> None:
        self.allocated = mb * 1024 * 1024
        self.peak = max(self.peak, self.allocated)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import torch

        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: self.allocated)
        monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 2 * self.allocated)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: self.peak)
        monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 2 * self.peak)
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", self.reset)

    def reset(self, device=None) -> None:
        self.peak, self.resets = self.allocated, self.resets + 1


def test_cuda_peaks_per_point_only_when_on_a_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    log = MemoryLog(tmp_path / "train.memory.jsonl", "train")
    if not torch.cuda.is_initialized():
        assert "cuda_peak_mb" not in log.mark("start")  # a CPU job logs no CUDA figures
    cuda = FakeCuda()
    cuda.install(monkeypatch)
    cuda.use(300)
    cuda.use(100)
    first = log.mark("epoch", epoch=0)
    cuda.use(50)
    second = log.mark("epoch", epoch=1)
    assert (first["cuda_peak_mb"], first["cuda_peak_reserved_mb"], first["cuda_allocated_mb"]) == (
        300,
        600,
        100,
    )
    assert (second["cuda_peak_mb"], second["cuda_reserved_mb"]) == (100, 100)  # since the previous point
    assert "cuda_peak_mb" not in log.mark("video", full=False)
    lines = [json.loads(line) for line in (tmp_path / "train.memory.jsonl").read_text().splitlines()]
    assert [line.get("cuda_peak_mb") for line in lines][-3:] == [300, 100, None]
    assert cuda.resets == 2
