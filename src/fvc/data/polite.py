"""Politeness towards the sites a download talks to: a pause between two requests to one host (shared by
every worker thread) and the wait a 429/503 answer asks for with Retry-After."""

from __future__ import annotations

import email.utils
import threading
import time
from urllib.parse import urlsplit


class SitePacer:
    """`wait(url)` returns once `interval_s` has passed since the previous request to the same host was
    allowed; concurrent callers for one host are spaced out one after another."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, url: str) -> None:
        if self.interval_s <= 0:
            return
        host = (urlsplit(url).hostname or "").lower()
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(host, now))
            self._next[host] = slot + self.interval_s
        if slot > now:
            time.sleep(slot - now)


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks to wait (delta-seconds or an HTTP date); None when absent or
    unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
