"""Stop requests from outside: SLURM's warning before the time limit (SIGUSR1, asked for with `--signal`)
and SIGTERM (preemption, `scancel`, the time limit itself, the end of the job's snakemake).

A handler only records the signal; training acts on it at the next step boundary (`StopSignals.requested`),
writes a step checkpoint and raises `TrainingStopped`, so no step is ever left half done.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

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
    """Block SIGUSR1/SIGTERM until `stop_signals` handles them: one that arrives while a job starts (before
    training has its handlers) waits instead of killing the job with nothing saved."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


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
