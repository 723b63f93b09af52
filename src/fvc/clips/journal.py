"""A CSV journal of finished work: the rows of one item (e.g. a video's clips) appended in one write and
fsynced, so that a job killed at any point can resume from it. Only the last line can be torn by a kill; it
(and any line with the wrong number of fields) is dropped on reading, and the item it stood for is simply done
again."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from fvc.core.atomic import atomic_open, disk_space_errors

log = logging.getLogger(__name__)


def read_journal(path: str | os.PathLike[str], columns: Iterable[str]) -> list[dict[str, str]]:
    """The complete rows of a journal (none if it is missing or was written with other columns)."""
    path, columns = Path(path), list(columns)
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    if lines[-1]:
        log.warning("%s: dropping a torn last line (no newline): %r", path, lines[-1][:200])
    lines = lines[:-1]
    if not lines or _fields(lines[0]) != columns:
        log.warning("%s: header is not %s; starting the journal afresh", path, ",".join(columns))
        return []
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = _fields(line)
        if fields is None or len(fields) != len(columns):
            log.warning("%s: line %d: dropping a malformed row: %r", path, number, line[:200])
            continue
        rows.append(dict(zip(columns, fields, strict=True)))
    return rows


def _fields(line: bytes) -> list[str] | None:
    try:
        return next(csv.reader([line.decode("utf-8")]), [])
    except (UnicodeDecodeError, csv.Error):
        return None


def _line(values: Iterable[object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


class Journal:
    """An open journal: `rows` (kept from an earlier run) are rewritten atomically with the header, then each
    `append` adds durable lines."""

    def __init__(
        self, path: str | os.PathLike[str], columns: Iterable[str], rows: Iterable[dict] = ()
    ) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        with atomic_open(self.path, "w", newline="") as fh:
            fh.write(_line(self.columns))
            for row in rows:
                fh.write(_line(row[c] for c in self.columns))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def append(self, rows: Iterable[dict]) -> None:
        """Add `rows` in one write and make them durable (one fsync) before returning. Unbuffered, so nothing
        is left to flush after a failure: a full disk raises DiskFullError, and the torn line it may leave
        is dropped on reading."""
        data = "".join(_line(row[c] for c in self.columns) for row in rows).encode("utf-8")
        with disk_space_errors(self.path.parent, len(data)):
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
