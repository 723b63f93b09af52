"""Safe archive extraction (tar of any compression, zip): regular files only, every one inside the target
folder; links, devices, fifos, absolute paths and `..` escapes are refused before anything is written."""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from fvc.core.errors import FvcError

COPY_BUFFER = 1 << 20


class UnsafeArchiveError(FvcError, ValueError):
    """An archive member that would escape the target folder or is not a regular file."""


def unsafe_name(name: str) -> str | None:
    """Why a member name is unsafe to extract (None when it is a plain relative path)."""
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if "\\" in name or "\x00" in name:
        return "backslash or NUL in the name"
    parts = name.split("/")
    if ".." in parts:
        return "path escapes the target folder ('..')"
    if posixpath.normpath(name) in (".", ""):
        return "empty path"
    return None


class _Reader:
    """A uniform view of tar and zip members: name -> kind, size, and a streaming open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if zipfile.is_zipfile(path):
            self._zip: zipfile.ZipFile | None = zipfile.ZipFile(path)
            self._tar: tarfile.TarFile | None = None
            self.members: dict[str, zipfile.ZipInfo | tarfile.TarInfo]
            self.members = {info.filename: info for info in self._zip.infolist()}
        elif tarfile.is_tarfile(path):
            self._zip = None
            self._tar = tarfile.open(path, "r:*")
            self.members = {info.name: info for info in self._tar.getmembers()}
        else:
            raise UnsafeArchiveError(f"{path}: not a tar or zip archive")

    def close(self) -> None:
        archive = self._zip or self._tar
        assert archive is not None
        archive.close()

    def problem(self, name: str) -> str | None:
        """Why member `name` may not be extracted (None when it is a safe regular file or folder)."""
        if name not in self.members:
            return "not in the archive"
        reason = unsafe_name(name.rstrip("/") if self._zip else name)
        if reason:
            return reason
        info = self.members[name]
        if isinstance(info, tarfile.TarInfo):
            if info.issym() or info.islnk():
                return f"link to {info.linkname!r}"
            if not (info.isfile() or info.isdir()):
                return "device, fifo or other special file"
            return None
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records no Unix file type
        if kind == stat.S_IFLNK:
            return "symbolic link"
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            return "device, fifo or other special file"
        return None

    def is_dir(self, name: str) -> bool:
        info = self.members[name]
        return info.isdir() if isinstance(info, tarfile.TarInfo) else info.is_dir()

    def open(self, name: str) -> IO[bytes]:
        info = self.members[name]
        if isinstance(info, zipfile.ZipInfo):
            assert self._zip is not None
            return self._zip.open(info)
        assert self._tar is not None
        fh = self._tar.extractfile(info)
        assert fh is not None, name
        return fh


@contextmanager
def _reader(archive: str | os.PathLike[str]) -> Iterator[_Reader]:
    reader = _Reader(Path(archive))
    try:
        yield reader
    finally:
        reader.close()


def member_problems(archive: str | os.PathLike[str], members: Iterable[str] | None = None) -> dict[str, str]:
    """Member -> reason for every selected member (all when None) that safe_extract would refuse."""
    with _reader(archive) as reader:
        names = list(reader.members) if members is None else list(members)
        return {name: reason for name in names if (reason := reader.problem(name))}


def safe_extract(
    archive: str | os.PathLike[str], dest: str | os.PathLike[str], members: Iterable[str] | None = None
) -> list[Path]:
    """Extract the selected members (all when None) under `dest`, streaming each file, and return their paths.
    Raises UnsafeArchiveError, writing nothing, if any selected member is unsafe."""
    dest = Path(dest)
    with _reader(archive) as reader:
        wanted = set(reader.members if members is None else members)
        names = [name for name in reader.members if name in wanted]  # archive order: one pass through a .gz
        names += sorted(wanted.difference(reader.members))
        problems = {name: reason for name in names if (reason := reader.problem(name))}
        if problems:
            listed = "; ".join(f"{name!r}: {reason}" for name, reason in problems.items())
            raise UnsafeArchiveError(f"{archive}: refused member(s): {listed}")
        root = dest.resolve()
        written = []
        for name in names:
            target = dest / name.rstrip("/")
            if not target.resolve().is_relative_to(root):
                raise UnsafeArchiveError(f"{archive}: member {name!r} resolves outside {dest}")
            if reader.is_dir(name):
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with reader.open(name) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, COPY_BUFFER)
            written.append(target)
    return written
