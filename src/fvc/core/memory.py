"""Memory log: RSS, USS, process peak, cgroup and CUDA usage at named points of a job, as JSON lines.

Points repeated per item (a video, a batch) may log RSS and peak only (`mark(..., full=False)`): USS comes
from smaps_rollup, whose read grows with the process's mappings and cost augment 17 % of its time.

Also glibc's allocator settings (no-ops off glibc): `fix_mmap_threshold` keeps big buffers in their own
mappings, returned to the OS when freed, `reuse_freed_memory` keeps freed buffers resident for reuse, and
`release_freed_memory` trims the heap."""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import psutil

MB = 1024 * 1024
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers in glibc's malloc.h
MMAP_THRESHOLD = MB
MMAP_THRESHOLD_MAX = 32 * MB  # the largest glibc accepts on 64-bit


def _glibc() -> ctypes.CDLL | None:
    """This process's C library when it is glibc (has mallopt and malloc_trim), else None."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


GLIBC = _glibc()


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Serve every allocation of `threshold` bytes or more from its own mapping, unmapped when freed. glibc
    raises its threshold after the first big free (up to 32 MB), and later big buffers (a layer's compute
    copy, a batch's activations) then come from the heap and stay resident after they are freed, so the
    peak grows by several of them. Returns whether it was set (glibc only)."""
    return GLIBC is not None and GLIBC.mallopt(M_MMAP_THRESHOLD, threshold) == 1


def reuse_freed_memory(threshold: int = MMAP_THRESHOLD_MAX) -> bool:
    """Serve allocations below `threshold` bytes from the heap and never trim it, for a loop that frees and
    makes the same buffers again at every step (training): they reuse resident pages. Under glibc's default
    rules a step's big buffers are mapped afresh, or the heap top is trimmed and grown back, and every page
    faults in again: up to 40,000 faults and 30 % of an epoch in system time (naive_cnn's row). The peak
    stays the step's own; RSS stays at it between steps. Returns whether it was set (glibc only)."""
    return (
        GLIBC is not None
        and GLIBC.mallopt(M_MMAP_THRESHOLD, threshold) == 1
        and GLIBC.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    )


def release_freed_memory() -> None:
    """Give freed heap pages back to the OS (glibc's malloc_trim): buffers of varied sizes otherwise fragment
    the heap, and RSS creeps up by megabytes per hundred items."""
    if GLIBC is not None:
        GLIBC.malloc_trim(0)


def _cgroup_file(name: str) -> Path | None:
    """The cgroup v2 (or v1) memory file of this process's cgroup, if readable."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if controllers == "":
            candidate = Path("/sys/fs/cgroup") / rel.lstrip("/") / name
        elif "memory" in controllers.split(","):
            v1 = {
                "memory.current": "memory.usage_in_bytes",
                "memory.peak": "memory.max_usage_in_bytes",
                "memory.max": "memory.limit_in_bytes",
            }[name]
            candidate = Path("/sys/fs/cgroup/memory") / rel.lstrip("/") / v1
        else:
            continue
        if candidate.is_file():
            return candidate
    return None


def cgroup_bytes(name: str) -> int | None:
    """Read a cgroup memory value in bytes (`memory.current`, `memory.peak`, `memory.max`); None if absent."""
    path = _cgroup_file(name)
    if path is None:
        return None
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    value = int(text)
    return None if value >= 1 << 60 else value


def _status_bytes() -> dict[str, int]:
    """VmRSS and VmHWM of this process in bytes, from one read of /proc/self/status (empty off Linux)."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    return {line[:5]: int(line.split()[1]) * 1024 for line in lines if line.startswith(("VmRSS:", "VmHWM:"))}


def peak_rss_bytes() -> int:
    """This process's peak resident set size: VmHWM, since ru_maxrss can carry the parent's peak over exec."""
    peak = _status_bytes().get("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def quick_snapshot() -> dict[str, float | None]:
    """RSS and peak RSS in MB from one small /proc read: cheap enough for a point per video or batch
    (`snapshot` reads smaps_rollup for USS, which costs milliseconds in a large process)."""
    status = _status_bytes()
    if len(status) < 2:
        status = {"VmRSS": psutil.Process().memory_info().rss, "VmHWM": peak_rss_bytes()}
    return {"rss_mb": status["VmRSS"] / MB, "peak_rss_mb": status["VmHWM"] / MB}


def snapshot() -> dict[str, float | None]:
    """Current memory figures in MB: rss, uss, peak_rss, cgroup current/peak, CUDA when on a GPU."""
    proc = psutil.Process()
    info = proc.memory_full_info()
    snap: dict[str, float | None] = {
        "rss_mb": info.rss / MB,
        "uss_mb": info.uss / MB,
        "peak_rss_mb": peak_rss_bytes() / MB,
    }
    for key, name in (("cgroup_current_mb", "memory.current"), ("cgroup_peak_mb", "memory.peak")):
        value = cgroup_bytes(name)
        snap[key] = None if value is None else value / MB
    snap.update(cuda_snapshot())
    return snap


def cuda_snapshot() -> dict[str, float]:
    """CUDA memory in MB when this process uses a GPU (torch imported and CUDA initialised), else nothing:
    allocated and reserved now, and their peaks since the previous snapshot (the peak counters are reset, so
    each epoch or fold load records its own peak; the job's peak is the largest)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return {}
    snap = {
        "cuda_allocated_mb": torch.cuda.memory_allocated() / MB,
        "cuda_reserved_mb": torch.cuda.memory_reserved() / MB,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / MB,
        "cuda_peak_reserved_mb": torch.cuda.max_memory_reserved() / MB,
    }
    torch.cuda.reset_peak_memory_stats()
    return snap


class MemoryLog:
    """Appends a memory snapshot per named point to a JSON-lines file (or only returns it if path is None)."""

    def __init__(self, path: str | os.PathLike[str] | None, stage: str = "") -> None:
        self.path = Path(path) if path is not None else None
        self.stage = stage
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def mark(self, point: str, *, full: bool = True, **extra: Any) -> dict[str, Any]:
        """Record the memory at `point`; `extra` fields (e.g. video id, epoch) go into the same line. `full`:
        every figure (`snapshot`), for a stage's start, end and rare points; `full=False`: RSS and peak only
        (`quick_snapshot`), for points repeated per item on a hot path."""
        record: dict[str, Any] = {
            "time": time.time(),
            "stage": self.stage,
            "point": point,
            "pid": os.getpid(),
        }
        record.update(snapshot() if full else quick_snapshot())
        record.update(extra)
        if self.path is not None:
            with self.path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
        return record
