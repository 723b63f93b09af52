"""Manifest reading: the fvc format (video_id,url,label,group,sha256,size) and the real FVC.csv format
(cascade_id,video_url,label), validated row by row with errors that name the file, line and field."""

from __future__ import annotations

import csv
import hashlib
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fvc.core.errors import FvcError

FVC_COLUMNS = ("video_id", "url", "label", "group", "sha256", "size")
FVC_CSV_COLUMNS = ("cascade_id", "video_url", "label")
LABELS = {"real": 0, "fake": 1, "0": 0, "1": 1}
SHA256_RE = re.compile(r"[0-9a-f]{64}")


class ManifestError(FvcError, ValueError):
    """A manifest that cannot be read; the message names the file, the line and the field."""


@dataclass(frozen=True)
class ManifestEntry:
    """One video to fetch. `url` is as written (absolute URL, path relative to the manifest's folder, or
    `archive#member`); `sha256` and `size` are None when the manifest does not give them."""

    video_id: str
    url: str
    label: int
    group: str
    sha256: str | None = None
    size: int | None = None
    line: int = 0


def _fail(path: Path, line: int, field: str, message: str) -> ManifestError:
    return ManifestError(f"{path}: line {line}, field {field!r}: {message}")


def check_video_id(video_id: str) -> str | None:
    """Why `video_id` is not a safe relative POSIX path (None when it is)."""
    if not video_id:
        return "is empty"
    if video_id.startswith("/") or re.match(r"^[A-Za-z]:", video_id) or "\\" in video_id:
        return f"{video_id!r} must be a relative POSIX path"
    if ".." in video_id.split("/"):
        return f"{video_id!r} must not contain '..'"
    if posixpath.normpath(video_id) != video_id or video_id in (".", ""):
        return f"{video_id!r} is not a normalised path (no '.', '//' or trailing '/')"
    if any(ord(c) < 32 for c in video_id):
        return f"{video_id!r} contains control characters"
    return None


def video_id_from_url(url: str) -> str:
    """A safe, readable video_id for a URL: host and path/query reduced to [A-Za-z0-9._-], plus a short digest
    of the whole URL so that distinct URLs never collide."""
    parts = urlsplit(url.strip())
    raw = "/".join([(parts.hostname or "local").removeprefix("www."), parts.path, parts.query])
    slug = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9.-]+", "_", raw)).strip("._-")[:80].strip("._-")
    digest = hashlib.blake2b(url.strip().encode("utf-8"), digest_size=4).hexdigest()
    return f"{slug}_{digest}"


def parse_label(value: str, path: Path, line: int) -> int:
    """`real`/`fake` (any case) or 0/1 -> 0/1 (1 = fake)."""
    label = LABELS.get(value.strip().lower())
    if label is None:
        raise _fail(path, line, "label", f"unknown label {value!r} (expected real, fake, 0 or 1)")
    return label


def _required(row: dict, field: str, path: Path, line: int) -> str:
    value = (row.get(field) or "").strip()
    if not value:
        raise _fail(path, line, field, "is empty")
    return value


def _fvc_entry(row: dict, path: Path, line: int) -> ManifestEntry:
    video_id = _required(row, "video_id", path, line)
    problem = check_video_id(video_id)
    if problem:
        raise _fail(path, line, "video_id", problem)
    sha256 = (row.get("sha256") or "").strip().lower() or None
    if sha256 is not None and not SHA256_RE.fullmatch(sha256):
        raise _fail(path, line, "sha256", f"{sha256!r} is not 64 hex digits")
    size_text = (row.get("size") or "").strip()
    if size_text and not size_text.isdigit():
        raise _fail(path, line, "size", f"{size_text!r} is not a non-negative integer")
    return ManifestEntry(
        video_id=video_id,
        url=_required(row, "url", path, line),
        label=parse_label(_required(row, "label", path, line), path, line),
        group=_required(row, "group", path, line),
        sha256=sha256,
        size=int(size_text) if size_text else None,
        line=line,
    )


def _fvc_csv_entry(row: dict, path: Path, line: int) -> ManifestEntry:
    url = _required(row, "video_url", path, line)
    return ManifestEntry(
        video_id=video_id_from_url(url),
        url=url,
        label=parse_label(_required(row, "label", path, line), path, line),
        group=_required(row, "cascade_id", path, line),
        line=line,
    )


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """Read and validate a manifest in the fvc or the FVC.csv format (chosen by the header)."""
    path = Path(path)
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the manifest: {exc}") from exc
    with fh:
        reader = csv.DictReader(fh)
        header = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = header
        columns: tuple[str, ...]
        if "cascade_id" in header or "video_url" in header:
            columns, make = FVC_CSV_COLUMNS, _fvc_csv_entry
        else:
            columns, make = FVC_COLUMNS[:3] + ("group",), _fvc_entry
        missing = [c for c in columns if c not in header]
        if missing:
            raise _fail(path, 1, missing[0], f"missing column(s) {', '.join(missing)}; header is {header}")
        entries: list[ManifestEntry] = []
        seen: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            if None in row:
                count = len(header) + len(row[None])
                raise _fail(path, line, "<row>", f"{count} values for {len(header)} columns")
            if not any((v or "").strip() for v in row.values()):
                continue
            entry = make(row, path, line)
            if entry.video_id in seen:
                raise _fail(
                    path, line, "video_id", f"{entry.video_id!r} duplicates line {seen[entry.video_id]}"
                )
            seen[entry.video_id] = line
            entries.append(entry)
    if not entries:
        raise ManifestError(f"{path}: the manifest has no entries")
    return entries
