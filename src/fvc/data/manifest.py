"""Manifest reading: the fvc format (video_id,url,label,group,sha256,size) and the real FVC.csv /
FVC_dup.csv format (cascade_id,video_url,label), one file or several, validated row by row with errors that
name the file, line and field. Labels go through a label map (config `dataset.labels`: name -> 1 fake,
0 real, or None to drop the row); the same URL twice is one video."""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from fvc.core.errors import FvcError
from fvc.core.schema import defaults

log = logging.getLogger(__name__)

FVC_COLUMNS = ("video_id", "url", "label", "group", "sha256", "size")
FVC_CSV_COLUMNS = ("cascade_id", "video_url", "label")
NUMERIC_LABELS = {"0": 0, "1": 1}  # 0 and 1 always mean themselves
LabelMap = Mapping[str, int | None]
SHA256_RE = re.compile(r"[0-9a-f]{64}")


class ManifestError(FvcError, ValueError):
    """A manifest that cannot be read; the message names the file, the line and the field."""


@dataclass(frozen=True)
class ManifestEntry:
    """One video to fetch. `url` is as written (absolute URL, path relative to the manifest's folder, or
    `archive#member`); `sha256` and `size` are None when the manifest does not give them. `label_name` is the
    label as written (e.g. `debunked`), `manifest` the file and `line` the row it came from."""

    video_id: str
    url: str
    label: int
    group: str
    sha256: str | None = None
    size: int | None = None
    line: int = 0
    label_name: str = ""
    manifest: str = ""

    @property
    def base(self) -> Path:
        """The folder that relative URLs of this entry are relative to (its manifest's)."""
        return Path(self.manifest).parent


@dataclass
class Manifest:
    """The videos of one or more manifest files, and what was left out: rows whose label the map drops
    (label -> count) and rows repeating a URL already listed."""

    entries: list[ManifestEntry]
    dropped: dict[str, int] = field(default_factory=dict)
    repeats: int = 0


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


def default_labels() -> dict[str, int | None]:
    """The schema's default label map (`dataset.labels`)."""
    return dict(defaults()["dataset"]["labels"])


def parse_label(value: str, labels: LabelMap, path: Path, line: int) -> int | None:
    """A label through the map (any case): 1 fake, 0 real, None when the map drops it; 0/1 stand for
    themselves. A label the map does not name is a one-line error naming the file, line and label."""
    name = value.strip().lower()
    known = {key.strip().lower(): mapped for key, mapped in labels.items()}
    if name in known:
        return known[name]
    if name in NUMERIC_LABELS:
        return NUMERIC_LABELS[name]
    raise _fail(
        path, line, "label", f"label {value!r} is not in dataset.labels ({', '.join(sorted(known))}, 0, 1)"
    )


def _required(row: dict, field: str, path: Path, line: int) -> str:
    value = (row.get(field) or "").strip()
    if not value:
        raise _fail(path, line, field, "is empty")
    return value


def _fvc_entry(row: dict, label: int, path: Path, line: int) -> ManifestEntry:
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
        label=label,
        group=_required(row, "group", path, line),
        sha256=sha256,
        size=int(size_text) if size_text else None,
        line=line,
        label_name=row["label"].strip(),
        manifest=str(path),
    )


def _fvc_csv_entry(row: dict, label: int, path: Path, line: int) -> ManifestEntry:
    url = _required(row, "video_url", path, line)
    return ManifestEntry(
        video_id=video_id_from_url(url),
        url=url,
        label=label,
        group=_required(row, "cascade_id", path, line),
        line=line,
        label_name=row["label"].strip(),
        manifest=str(path),
    )


def _url_key(entry: ManifestEntry) -> str:
    """What makes two rows the same video: the URL, a relative one taken from its manifest's folder."""
    scheme = urlsplit(entry.url).scheme.lower()
    return entry.url if scheme and len(scheme) > 1 else os.path.normpath(entry.base / entry.url)


def _read_one(path: Path, labels: LabelMap, manifest: Manifest, urls: dict[str, ManifestEntry]) -> None:
    """Add the rows of one manifest file to `manifest` (`urls`: the entries so far by URL key)."""
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
        ids = {e.video_id: e for e in manifest.entries}
        for row in reader:
            line = reader.line_num
            if None in row:
                count = len(header) + len(row[None])
                raise _fail(path, line, "<row>", f"{count} values for {len(header)} columns")
            if not any((v or "").strip() for v in row.values()):
                continue
            label_name = _required(row, "label", path, line)
            label = parse_label(label_name, labels, path, line)
            if label is None:
                manifest.dropped[label_name.lower()] = manifest.dropped.get(label_name.lower(), 0) + 1
                continue
            entry = make(row, label, path, line)
            first = urls.get(_url_key(entry))
            if first is not None:
                if first.label != entry.label:
                    log.warning(
                        "%s line %d repeats %s (%s line %d) with label %r; keeping %r",
                        path, line, entry.url, first.manifest, first.line, label_name, first.label_name,
                    )  # fmt: skip
                manifest.repeats += 1
                continue
            if entry.video_id in ids:
                other = ids[entry.video_id]
                where = f"line {other.line}" + (
                    "" if other.manifest == str(path) else f" of {other.manifest}"
                )
                raise _fail(path, line, "video_id", f"{entry.video_id!r} duplicates {where}")
            ids[entry.video_id] = urls[_url_key(entry)] = entry
            manifest.entries.append(entry)


def read_manifests(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], labels: LabelMap | None = None
) -> Manifest:
    """Read and validate one manifest file or several (fvc or FVC.csv format each, chosen by its header),
    mapping labels through `labels` (default: the schema's `dataset.labels`); a URL already listed (in any
    of the files) is the same video and is counted in `repeats`."""
    files = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if not files:
        raise ManifestError("no manifest file given (dataset.manifest is an empty list)")
    labels = default_labels() if labels is None else labels
    manifest = Manifest(entries=[])
    urls: dict[str, ManifestEntry] = {}
    for path in files:
        _read_one(path, labels, manifest, urls)
    names = ", ".join(map(str, files))
    if not manifest.entries:
        dropped = (
            f" ({sum(manifest.dropped.values())} rows dropped by dataset.labels)" if manifest.dropped else ""
        )
        raise ManifestError(f"{names}: the manifest has no entries{dropped}")
    dropped = ", ".join(f"{n} {label}" for label, n in sorted(manifest.dropped.items())) or "none"
    log.info(
        "%s: %d videos (%d rows repeat a URL; dropped by dataset.labels: %s)",
        names, len(manifest.entries), manifest.repeats, dropped,
    )  # fmt: skip
    return manifest


def read_manifest(path: str | os.PathLike[str], labels: LabelMap | None = None) -> list[ManifestEntry]:
    """The entries of one manifest file (see read_manifests)."""
    return read_manifests(path, labels).entries
