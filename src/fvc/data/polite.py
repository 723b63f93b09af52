"""Politeness towards the sites a download talks to, held across threads and processes (download shards): a
pause between two requests to one host and the wait a 429/503 answer asks for with Retry-After.

Each host's state (when the last request started, and the "not before" time a 429/503 set) is a small JSON
file in a state folder, read and written under `fcntl.flock`. It holds for every process on one node, and
across nodes on a shared filesystem whose flock works between nodes (NFSv4, GPFS, Lustre mounted with
`flock`) and whose nodes' clocks agree; it does not on a filesystem where flock is node-local (Lustre's
`localflock`, some NFSv3 setups without lockd) or on node-local folders."""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit


@contextlib.contextmanager
def flocked(path: Path) -> Iterator[int]:
    """An exclusive `fcntl.flock` on `path` (created if missing) for the block; yields its descriptor."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class SitePacer:
    """`wait(url)` returns once `interval_s` has passed since the last request to the same host started (in
    any thread or process sharing `state_dir`) and any hold on the host is over; `hold(url, s)` keeps every
    request to the host back for `s` seconds (a 429/503's Retry-After)."""

    def __init__(self, interval_s: float, state_dir: str | os.PathLike[str]) -> None:
        self.interval_s = interval_s
        self.state_dir = Path(state_dir)

    def state_file(self, url: str) -> Path:
        """The host's state file, named after the host (anything but letters, digits, '.', '-' as '_')."""
        host = (urlsplit(url).hostname or "").lower()
        return self.state_dir / (re.sub(r"[^a-z0-9.-]", "_", host) or "_")

    @contextlib.contextmanager
    def _state(self, url: str) -> Iterator[dict[str, float]]:
        """The host's state, locked for the block and written back after it."""
        with flocked(self.state_file(url)) as fd:
            raw = os.pread(fd, 4096, 0)
            try:
                state = {"last": 0.0, "not_before": 0.0, **json.loads(raw)}
            except ValueError:
                state = {"last": 0.0, "not_before": 0.0}  # a new (empty) file
            before = dict(state)
            yield state
            if state != before:
                data = json.dumps(state).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)

    def wait(self, url: str) -> None:
        while True:
            with self._state(url) as state:
                now = time.time()
                start = max(state["last"] + self.interval_s, state["not_before"])
                if now >= start:
                    state["last"] = now
                    return
            time.sleep(start - now)  # then check again: another request or a hold may have come first

    def hold(self, url: str, seconds: float) -> None:
        with self._state(url) as state:
            state["not_before"] = max(state["not_before"], time.time() + seconds)


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
