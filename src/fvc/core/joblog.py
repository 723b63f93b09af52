"""Logging set-up for a workflow job: stderr and the `logging` tree go to the rule's log file."""

from __future__ import annotations

import logging
import os
import sys


def log_to(path: str | os.PathLike[str]) -> None:
    """Send stderr (progress bars, warnings, tracebacks) and INFO-level logging to `path`."""
    sys.stderr = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the job
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
