"""Atomic file writes: every file fvc writes appears whole or not at all.

A write goes to a uniquely named temporary file in the target's folder (`.<name>.<pid>.<random>.tmp`), which
is fsynced, renamed over the target with `os.replace`, and the folder is fsynced so the rename itself
survives a crash. The temporary file is removed on any error; those a killed process leaves behind are
removed by `remove_stale_temps` at the next run of the stage that owns the folder. A full disk (ENOSPC)
becomes a one-line `DiskFullError` naming the folder, the bytes needed when known and the space left."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from fvc.core.errors import FvcError

StrPath = str | os.PathLike[str]


class DiskFullError(FvcError):
    """No space left on the device that holds a file being written."""


def human_bytes(nbytes: int) -> str:
    """`nbytes` in kB, MB or GB (powers of 1024), one decimal."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 2**10:.1f} kB"


def disk_full(folder: StrPath, needed: int | None = None) -> DiskFullError:
    """The error for a full disk at `folder`: names it, the bytes needed (when known) and the free space."""
    try:
        free = human_bytes(shutil.disk_usage(folder).free)
    except OSError:
        free = "unknown"
    need = f"{human_bytes(needed)} needed, " if needed is not None else ""
    where = os.path.abspath(folder)
    return DiskFullError(f"no space left on the device of {where}: {need}{free} free; free space and rerun")


@contextlib.contextmanager
def disk_space_errors(folder: StrPath, needed: int | None = None) -> Iterator[None]:
    """Turn an ENOSPC `OSError` raised inside the block into a `DiskFullError` for `folder`."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise disk_full(folder, needed) from exc


def fsync_dir(folder: StrPath) -> None:
    """Make the entries of `folder` (e.g. a rename into it) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp_path: StrPath, final_path: StrPath) -> None:
    """fsync `tmp_path`, rename it to `final_path` and fsync the folder: for writers that manage their own
    temporary file (e.g. a resumable download's `.part`). Both must be on the same filesystem."""
    final = Path(final_path)
    with open(tmp_path, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp_path, final)
    fsync_dir(final.parent)


def commit_batch(files: list[tuple[int, Path, Path]]) -> None:
    """For files made durable together (e.g. one video's clips): fsync each open temporary file (fd, temp,
    final path), rename it to its final path, then fsync each folder once rather than once per file."""
    for fd, tmp, final in files:
        with disk_space_errors(final.parent):
            os.fsync(fd)
        os.replace(tmp, final)
    for folder in dict.fromkeys(final.parent for _, _, final in files):
        fsync_dir(folder)


def commit_dir(staging: StrPath, final_path: StrPath) -> None:
    """Rename a fully written folder `staging` to `final_path` (which must not exist) and fsync the parent."""
    final = Path(final_path)
    os.rename(staging, final)
    fsync_dir(final.parent)


TEMP_NAME = re.compile(r"\..+\.\d+\.[0-9a-f]{8}\.tmp")


def create_temp(path: Path) -> Path:
    """A new empty file `.<name>.<pid>.<random>.tmp` next to `path`, created with the usual permissions
    (0o666 less the umask, unlike `tempfile.mkstemp`'s 0o600)."""
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def remove_stale_temps(folder: StrPath, recursive: bool = False) -> int:
    """Delete the temporary files that killed writers left in `folder` (and below, if `recursive`); only for
    a folder that no other process is writing to. Returns how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    candidates = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    stale = [path for path in candidates if TEMP_NAME.fullmatch(path.name) and path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def _keep_mode(path: Path, tmp: Path) -> None:
    """Give `tmp` the permissions of the file it replaces, if there is one."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))


@contextlib.contextmanager
def atomic_path(path: StrPath, needed: int | None = None) -> Iterator[Path]:
    """Yield the path of a fresh temporary file next to `path`, for a writer that wants a path (polars,
    safetensors); once the block succeeds it is committed to `path`, on error it is removed. `needed`
    (bytes, if known) goes into the message of a full disk."""
    path = Path(path)
    with disk_space_errors(path.parent, needed):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = create_temp(path)
        try:
            yield tmp
            _keep_mode(path, tmp)
            commit(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(
    path: StrPath, mode: str = "wb", needed: int | None = None, **kwargs: Any
) -> Iterator[IO[Any]]:
    """Yield a file opened with `mode` ("wb" or "w"; `kwargs` go to `open`) whose content replaces `path`
    atomically when the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a new file: mode 'w' or 'wb', not {mode!r}")
    with atomic_path(path, needed) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def write_bytes(path: StrPath, data: bytes) -> None:
    """Replace `path` by `data`, atomically."""
    with atomic_open(path, "wb", needed=len(data)) as fh:
        fh.write(data)


def write_text(path: StrPath, text: str, encoding: str = "utf-8") -> None:
    """Replace `path` by `text`, atomically."""
    write_bytes(path, text.encode(encoding))
