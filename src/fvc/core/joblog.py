"""Set-up of a workflow job: its log file, and its end when the Snakemake process that started it ends."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

import psutil

# Set by the workflow (rules/common.smk) to the pid of the snakemake process that parsed it, inherited by the
# jobs that process starts: locally the driver; under SLURM the job's own snakemake on the node.
SNAKEMAKE_PID_ENV = "FVC_SNAKEMAKE_PID"


# First line of each attempt's part of a job's history log: `attempts_log(path)`.
ATTEMPT_HEADER = re.compile(
    r"^=== fvc attempt (?P<attempt>\d+): (?:SLURM job (?P<job>\d+(?:_\d+)?)|local job) on (?P<host>\S+), "
    r"pid (?P<pid>\d+), snakemake pid (?P<snakemake>\d+), (?P<time>\S+) ===$",
    re.M,
)


def attempts_log(path: str | os.PathLike[str]) -> Path:
    """The history log beside a job's log (`fold0.log` -> `fold0.attempts.log`): every attempt's lines, each
    attempt under its header. Snakemake deletes a job's `log:` files before each attempt, never this one."""
    path = Path(path)
    return path.with_name(f"{path.stem}.attempts{path.suffix or '.log'}")


def _snakemake_pid() -> int:
    return int(os.environ.get(SNAKEMAKE_PID_ENV) or os.getppid())


def _attempt_argument() -> int | None:
    """The `--attempt N` of the snakemake process that runs this job (a cluster job's own snakemake is
    started with it), None when no ancestor has one (a local run's driver)."""
    for process in psutil.Process().parents():
        try:
            args = process.cmdline()
        except psutil.Error:
            continue
        if "--attempt" in args[:-1]:
            value = args[args.index("--attempt") + 1]
            return int(value) if value.isdigit() else None
    return None


def slurm_job_id() -> str:
    """This job's id as sacct and Snakemake name it: `<jobid>_<task>` in an array task (whose own
    SLURM_JOB_ID is another number), else SLURM_JOB_ID."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ["SLURM_JOB_ID"]


def attempt_header(history: Path) -> str:
    """The header of this attempt: its number (the job's snakemake's `--attempt`, else 1 + the headers that
    the same snakemake process left in `history`), the SLURM job id (or `local job`), host, pids, UTC time."""
    snakemake = _snakemake_pid()
    attempt = _attempt_argument()
    if attempt is None:
        earlier = history.read_text(errors="replace") if history.exists() else ""
        attempt = 1 + sum(int(m["snakemake"]) == snakemake for m in ATTEMPT_HEADER.finditer(earlier))
    job = f"SLURM job {slurm_job_id()}" if os.environ.get("SLURM_JOB_ID") else "local job"
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    where = f"{socket.gethostname()}, pid {os.getpid()}, snakemake pid {snakemake}"
    return f"=== fvc attempt {attempt}: {job} on {where}, {when} ==="


class _Tee:
    """A text stream writing to several files at once (the job's log and its history log)."""

    def __init__(self, *files: TextIO) -> None:
        self.files = files

    def write(self, text: str) -> int:
        for file in self.files:
            file.write(text)
        return len(text)

    def flush(self) -> None:
        for file in self.files:
            file.flush()

    def __getattr__(self, name: str) -> object:
        """Anything else (`encoding`, `fileno`, `isatty`, ...) from the job's own log."""
        return getattr(self.files[0], name)


def log_to(path: str | os.PathLike[str]) -> None:
    """Send stderr (progress bars, warnings, tracebacks) and INFO-level logging to `path`, and to its history
    log `attempts_log(path)` under this attempt's header, so that a retry keeps the failed attempts' lines."""
    history = attempts_log(path)
    header = attempt_header(history)
    log = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the job
    kept = open(history, "a", buffering=1)  # noqa: SIM115 - lives as long as the job
    sys.stderr = _Tee(log, kept)  # type: ignore[assignment]
    sys.stderr.write(header + "\n")
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
