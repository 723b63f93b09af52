"""Stop requests from outside: SLURM's warning before the time limit (SIGUSR1, asked for with `--signal`)
and SIGTERM (preemption, `scancel`, the time limit itself, the end of the job's snakemake).

A handler only records the signal; training acts on it at the next step boundary (`StopSignals.requested`),
writes a step checkpoint and raises `TrainingStopped`, so no step is ever left half done.

SLURM signals a job step's task only, which on a node is the snakemake running the job, not the job's own
process (docs/slurm.md "Time limits and preemption"): the workflow makes every snakemake pass SIGUSR1 and
SIGTERM on to its jobs (`forward_stop_signals_to_jobs`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import psutil

from fvc.core.errors import FvcError

#: The signals that ask training to stop at the next step.
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class TrainingStopped(FvcError):
    """Training stopped on a signal after writing a checkpoint; a rerun resumes from it."""

    #: The job's exit status (EX_TEMPFAIL): non-zero, so Snakemake retries the job.
    exit_code = 75


class StopSignals:
    """The first stop signal received while installed (None until one arrives)."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)

    @property
    def requested(self) -> bool:
        return self.received is not None

    @property
    def name(self) -> str:
        return self.received.name if self.received is not None else "request"


def hold_stop_signals() -> None:
    """Block SIGUSR1 until `stop_signals` handles it: a time-limit warning that arrives while a job starts
    (before training has its handlers) stops the job at its first step instead of being its end. SIGTERM is
    not held: during start-up there is nothing to save, and the job ends at once."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})


@contextmanager
def stop_signals() -> Iterator[StopSignals]:
    """`StopSignals` recording SIGUSR1/SIGTERM for the duration (signals held by `hold_stop_signals` are
    delivered now; the previous handlers and mask are restored afterwards); outside the main thread, where
    Python cannot install handlers, one that never fires."""
    stops = StopSignals()
    if threading.current_thread() is not threading.main_thread():
        yield stops
        return
    previous = {sig: signal.signal(sig, stops._handle) for sig in STOP_SIGNALS}
    held = signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS) & set(STOP_SIGNALS)
    try:
        yield stops
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


#: The largest share of a job's time limit that the time-limit warning may take.
MAX_WARNING_SHARE = 0.25


def warning_lead_s(lead_s: int, limit_min: int) -> int:
    """Seconds before the time limit to warn: `lead_s` when it is at most MAX_WARNING_SHARE of the limit, else
    0 (no warning). A shorter lead would not leave training time to finish its step; a longer share would
    stop jobs that would have finished (the warning comes up to a minute early, SLURM's event resolution)
    and spend their retries. A job without a warning still saves its step on SLURM's SIGTERM at the limit
    when the step ends within KillWait."""
    return lead_s if lead_s <= limit_min * 60 * MAX_WARNING_SHARE else 0


def warning_signal_option(seconds: int) -> str:
    """sbatch's option asking for SIGUSR1 `seconds` before the time limit, sent to the job steps (not `B:`,
    which signals the batch shell only); empty for 0."""
    return f"--signal=USR1@{seconds}" if seconds else ""


def _jobs(process: psutil.Process) -> list[psutil.Process]:
    """The Python processes `process` started, directly or through shells, but not those they started in
    turn (a training's DataLoader workers, which a signal would kill before training could save its step)."""
    found, pending = [], process.children()
    while pending:
        child = pending.pop()
        with contextlib.suppress(psutil.Error):
            if "python" in child.name():
                found.append(child)
            else:
                pending.extend(child.children())
    return found


def forward_to_jobs(signum: int, frame: FrameType | None = None) -> None:
    """Send `signum` to the Python processes this process started (its jobs); usable as a signal handler."""
    for job in _jobs(psutil.Process()):
        with contextlib.suppress(psutil.Error):
            job.send_signal(signum)


def _forward_from(wakeups: int, chained: int) -> None:
    """Read signal numbers from the `wakeups` pipe (`signal.set_wakeup_fd`) forever: pass SIGTERM on to the
    jobs, and every byte on to the `chained` wakeup fd that was set before (-1: none)."""
    while True:
        try:
            received = os.read(wakeups, 64)
        except InterruptedError:
            continue
        if signal.SIGTERM in received:
            forward_to_jobs(signal.SIGTERM)
        if chained >= 0:
            with contextlib.suppress(OSError):
                os.write(chained, received)


def forward_stop_signals_to_jobs() -> bool:
    """Make this process (a snakemake) pass SIGUSR1 and SIGTERM on to the Python processes it started (its
    jobs). SIGUSR1 gets a handler that forwards it instead of ending the process (USR1's default action).
    SIGTERM keeps Snakemake's own handler, installed after the workflow is parsed (it waits for the running
    jobs, which would otherwise train on until SIGKILL): Python writes every handled signal's number to the
    wakeup fd, whichever handler runs, and a daemon thread reading it passes SIGTERM on. Returns whether
    SIGTERM is forwarded (not outside the main thread, where Python allows no signal set-up)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(signal.SIGUSR1, forward_to_jobs)
    wakeups, write_end = os.pipe()
    os.set_blocking(write_end, False)
    chained = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    threading.Thread(
        target=_forward_from, args=(wakeups, chained), name="forward-sigterm", daemon=True
    ).start()
    return True
