"""Progress bars that suit both a terminal and a log file.

On a terminal, tqdm's usual bar redrawn in place. When stderr is a file or pipe (a Snakemake or SLURM job's
log), the bar is written as whole lines, at most one every `FVC_PROGRESS_SECONDS` seconds (default 5) plus
the first and the last, so `tail -f` shows readable progress and the log holds no `\\r` redraws.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable
from typing import Any, TextIO, TypeVar

from tqdm import tqdm

INTERVAL_ENV = "FVC_PROGRESS_SECONDS"
DEFAULT_INTERVAL_S = 5.0
T = TypeVar("T")


class Bar(tqdm):
    """tqdm without its monitor thread and multiprocessing lock, whose set-up costs more than a small model's
    whole inference job."""

    monitor_interval = 0


Bar.set_lock(threading.RLock())


class LineWriter:
    """A stream for tqdm that turns each `\\r` redraw into one line and drops the blank clearing writes."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> Bar:
    """`tqdm(iterable, **kwargs)` on stderr: a live bar on a terminal, throttled whole lines otherwise."""
    stream = sys.stderr
    if stream.isatty():
        return Bar(iterable, file=stream, **kwargs)
    interval = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S))
    options = {**kwargs, "leave": True, "mininterval": interval, "miniters": 1}
    return Bar(iterable, file=LineWriter(stream), dynamic_ncols=False, ncols=100, **options)
