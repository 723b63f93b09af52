"""The warning when a training job's measured peak leaves too little of its memory request."""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)

#: Share of a row's `mem_mb` that should stay free above the measured peak plus Snakemake's overhead.
MIN_HEADROOM = 0.10


def check_headroom(model: str, mem_mb: int, peak_mb: float, overhead_mb: int) -> str | None:
    """Log (and return) a warning naming `models.<model>.mem_mb` when `peak_mb` + `overhead_mb` leaves less
    than MIN_HEADROOM of `mem_mb`; None when there is enough."""
    used = peak_mb + overhead_mb
    if used <= (1 - MIN_HEADROOM) * mem_mb:
        return None
    message = (
        f"{model}: measured peak {peak_mb:.0f} MB + Snakemake overhead {overhead_mb} MB = {used:.0f} MB "
        f"leaves {100 * (mem_mb - used) / mem_mb:.0f} % of models.{model}.mem_mb = {mem_mb} MB (under "
        f"{100 * MIN_HEADROOM:.0f} %); raise models.{model}.mem_mb to at least "
        f"{math.ceil(used / (1 - MIN_HEADROOM))}"
    )
    log.warning(message)
    return message
