"""Set-up of a workflow job: its log file, and its end when the Snakemake process that started it ends."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

import psutil

# Set by the workflow (rules/common.smk) to the pid of the snakemake process that parsed it, inherited by the
# jobs that process starts: locally the driver; under SLURM the job's own snakemake on the node.
SNAKEMAKE_PID_ENV = "FVC_SNAKEMAKE_PID"


def log_to(path: str | os.PathLike[str]) -> None:
    """Send stderr (progress bars, warnings, tracebacks) and INFO-level logging to `path`."""
    sys.stderr = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the job
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def _running(process: psutil.Process | None) -> bool:
    """Whether `process` still runs (the same one: psutil checks its start time; a zombie has ended)."""
    try:
        return process is not None and process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _watch(snakemake: psutil.Process | None, pid: int, poll_s: float) -> None:
    while _running(snakemake):
        time.sleep(poll_s)
    logging.getLogger(__name__).warning(
        "the snakemake process %d that started this job has ended: stopping (a rerun resumes the job)", pid
    )
    os.kill(os.getpid(), signal.SIGTERM)


def exit_with_snakemake(poll_s: float = 0.5) -> None:
    """End this job (SIGTERM) within `poll_s` seconds of the end of the snakemake process that started it
    (`$FVC_SNAKEMAKE_PID`, else the parent), also when that one ended before the job got here, so that a
    killed driver leaves no job running on as an orphan that a rerun would race. A daemon thread watches."""
    pid = int(os.environ.get(SNAKEMAKE_PID_ENV) or os.getppid())
    try:
        snakemake = psutil.Process(pid)
    except psutil.NoSuchProcess:
        snakemake = None
    threading.Thread(
        target=_watch, args=(snakemake, pid, poll_s), name="exit-with-snakemake", daemon=True
    ).start()
