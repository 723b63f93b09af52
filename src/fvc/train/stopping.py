"""Stop requests from outside: SLURM's warning before the time limit (SIGUSR1, asked for with `--signal`)
and SIGTERM (preemption, `scancel`, the time limit itself, the end of the job's snakemake).

A handler only records the signal; training acts on it at the next step boundary (`StopSignals.requested`),
writes a step checkpoint and raises `TrainingStopped`, so no step is ever left half done.

SLURM signals a job step's task only, which on a node is the snakemake running the job, not the job's own
process (docs/slurm.md "Time limits and preemption"): the workflow makes every snakemake pass SIGUSR1 on
(`forward_warning_to_jobs`).
"""

from __future__ import annotations

import contextlib
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


def warning_signal_option(seconds: int) -> str:
    """sbatch's option asking for SIGUSR1 `seconds` before the time limit, sent to the job steps (not `B:`,
    which signals the batch shell only); empty for 0."""
    return f"--signal=USR1@{seconds}" if seconds else ""


def _forward(signum: int, frame: FrameType | None) -> None:
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "python" in child.name():
                child.send_signal(signum)


def forward_warning_to_jobs() -> None:
    """Make this process (a snakemake) pass SIGUSR1 on to the Python processes it started (its jobs) instead
    of ending, which is USR1's default action."""
    signal.signal(signal.SIGUSR1, _forward)
