"""Download stage: fetch every manifest entry (http/https with Range resume, file:// and local paths, archive
members), verify size and sha256, install atomically, skip what already verifies, and record failures."""

from __future__ import annotations

import csv
import hashlib
import http.client
import logging
import os
import re
import shutil
import tarfile
import time
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlsplit

from tqdm import tqdm

from fvc.core.atomic import atomic_open, commit, disk_space_errors
from fvc.core.errors import FvcError
from fvc.core.memory import MemoryLog
from fvc.data.archive import member_problems, safe_extract
from fvc.data.manifest import ManifestEntry, read_manifest

log = logging.getLogger(__name__)

VIDEO_COLUMNS = ("video_id", "path", "label", "group", "sha256", "size")
FAILED_COLUMNS = ("video_id", "url", "reason")
STAGING = ".staging"
USER_AGENT = "fvc-download/0.1"
BAR: dict[str, Any] = {"unit": "B", "unit_scale": True, "unit_divisor": 1024, "mininterval": 2}


class FetchError(FvcError, RuntimeError):
    """One source could not be fetched or verified; the message is the reason."""


# What reading a fetched archive may raise: missing or truncated file, bad gzip/tar/zip, unsafe member.
ARCHIVE_ERRORS = (FetchError, OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile, ValueError)


class DownloadFailed(FvcError, RuntimeError):
    """More entries failed than `max_failed_fraction` allows; the message lists them."""


@dataclass(frozen=True)
class FetchOptions:
    """How to fetch: chunk size, retries with exponential backoff, and the per-request timeout."""

    chunk_bytes: int = 262144
    retries: int = 3
    timeout_s: float = 30.0
    backoff_s: float = 1.0


@dataclass
class DownloadReport:
    """What a download run did: the videos.csv rows, the failures (entry, reason) and the counts."""

    rows: list[dict] = field(default_factory=list)
    failed: list[tuple[ManifestEntry, str]] = field(default_factory=list)
    fetched: int = 0
    skipped: int = 0


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, entry: ManifestEntry) -> tuple[str, int]:
    """(sha256, size) of `path`; FetchError when they differ from the entry's."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        raise FetchError(f"size mismatch: got {size} bytes, expected {entry.size}")
    sha = sha256_file(path)
    if entry.sha256 is not None and sha != entry.sha256:
        raise FetchError(f"sha256 mismatch: got {sha}, expected {entry.sha256}")
    return sha, size


def split_source(url: str, base: Path) -> tuple[str, str | None]:
    """(source, archive member or None): source is an http(s) URL or a local path (file:// and paths
    relative to `base`, the manifest's folder)."""
    source, _, member = url.partition("#")
    scheme = urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        return source, member or None
    if scheme == "file":
        return urllib.request.url2pathname(unquote(urlsplit(source).path)), member or None
    if scheme and len(scheme) > 1:
        raise FetchError(f"unsupported URL scheme {scheme!r}")
    return str(base / source), member or None


def _content_total(resp: http.client.HTTPResponse, offset: int) -> int | None:
    """The full size of the resource from Content-Range (206) or Content-Length (200)."""
    match = re.fullmatch(r"bytes \d+-\d+/(\d+)", resp.headers.get("Content-Range", "").strip())
    if match:
        return int(match.group(1))
    length = resp.headers.get("Content-Length")
    return int(length) + offset if length and length.isdigit() else None


def _reason(exc: BaseException) -> str:
    """A one-line reason for a failure."""
    if isinstance(exc, FetchError):
        return str(exc)
    if isinstance(exc, HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, URLError):
        return f"cannot connect: {exc.reason}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _http_attempt(url: str, part: Path, opts: FetchOptions, progress: tqdm) -> None:
    """One request, resuming from the bytes already in `part`; FetchError if the body ends early."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=opts.timeout_s) as resp:
        if offset and resp.status != 206:
            log.info("%s: server ignored the Range request; starting over", url)
            offset = 0
        total = _content_total(resp, offset)
        needed = None if total is None else total - offset
        with disk_space_errors(part.parent, needed), open(part, "ab" if offset else "wb") as out:
            while chunk := resp.read(opts.chunk_bytes):
                out.write(chunk)
                progress.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise FetchError(f"connection closed after {size} of {total} bytes")


def fetch_http(url: str, part: Path, opts: FetchOptions, progress: tqdm) -> None:
    """Stream `url` into `part`, retrying with backoff and resuming with HTTP Range after an interruption.
    Client errors (404, 403, ...) are not retried."""
    last = "no attempt"
    for attempt in range(opts.retries + 1):
        if attempt:
            time.sleep(opts.backoff_s * 2 ** (attempt - 1))
        try:
            _http_attempt(url, part, opts, progress)
            return
        except HTTPError as exc:
            if exc.code == 416 and part.exists():  # our offset is past the end: start over
                part.unlink()
            elif 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise FetchError(_reason(exc)) from exc
            last = _reason(exc)
        except (FetchError, URLError, OSError, http.client.HTTPException) as exc:
            last = _reason(exc)
        log.warning("%s: attempt %d of %d failed: %s", url, attempt + 1, opts.retries + 1, last)
    raise FetchError(f"gave up after {opts.retries + 1} attempts: {last}")


def fetch_local(path: str, part: Path, opts: FetchOptions, progress: tqdm) -> None:
    """Copy a local file into `part` in chunks (a full disk is a DiskFullError, not a failed fetch)."""
    try:
        with disk_space_errors(part.parent), open(path, "rb") as src, open(part, "wb") as out:
            while chunk := src.read(opts.chunk_bytes):
                out.write(chunk)
                progress.update(len(chunk))
    except OSError as exc:
        raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from exc


def fetch(
    source: str, dest: Path, opts: FetchOptions, progress: tqdm, entry: ManifestEntry | None = None
) -> tuple[str, int] | None:
    """Fetch `source` into `dest` through `dest.part`; verify against `entry` (if given, returning its
    (sha256, size)), then rename atomically. A part that fails verification is removed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    expected = entry.size if entry is not None else None
    if expected is not None and part.exists() and part.stat().st_size > expected:
        part.unlink()
    if not source.startswith(("http://", "https://")):
        fetch_local(source, part, opts, progress)
    elif expected is None or not part.exists() or part.stat().st_size != expected:
        fetch_http(source, part, opts, progress)
    checked = None
    if entry is not None:
        try:
            checked = verify(part, entry)
        except FetchError:
            part.unlink()
            raise
    commit(part, dest)
    return checked


class _Run:
    """State of one download run: where files go, options, progress, and the report being filled."""

    def __init__(self, out_dir: Path, opts: FetchOptions, progress: tqdm, memory: MemoryLog) -> None:
        self.out_dir, self.opts, self.progress, self.memory = out_dir, opts, progress, memory
        self.report = DownloadReport()

    def final(self, entry: ManifestEntry) -> Path:
        return self.out_dir / entry.video_id

    def succeed(self, entry: ManifestEntry, checked: tuple[str, int], fetched: bool) -> None:
        sha, size = checked
        row = {"video_id": entry.video_id, "path": os.path.relpath(self.final(entry)), "label": entry.label,
               "group": entry.group, "sha256": sha, "size": size}  # fmt: skip
        self.report.rows.append(row)
        if fetched:
            self.report.fetched += 1
        else:
            self.report.skipped += 1
            self.progress.update(size)
        self.memory.mark("video", video_id=entry.video_id, fetched=fetched)

    def fail(self, entry: ManifestEntry, reason: str) -> None:
        log.error("%s (%s): %s", entry.video_id, entry.url, reason)
        self.report.failed.append((entry, reason))
        self.memory.mark("video", video_id=entry.video_id, failed=reason)

    def installed(self, entry: ManifestEntry) -> tuple[str, int] | None:
        """(sha256, size) of the installed file when it verifies; one that does not is removed."""
        path = self.final(entry)
        if not path.is_file():
            return None
        try:
            return verify(path, entry)
        except FetchError as exc:
            log.warning("%s: installed file fails verification (%s); fetching it again", entry.video_id, exc)
            path.unlink()
            return None

    def plain(self, entry: ManifestEntry, source: str) -> None:
        """A video fetched on its own (http, file, local path)."""
        if checked := self.installed(entry):
            self.succeed(entry, checked, fetched=False)
            return
        try:
            checked = fetch(source, self.final(entry), self.opts, self.progress, entry)
        except FetchError as exc:
            self.fail(entry, str(exc))
            return
        assert checked is not None, "fetch verifies against an entry"
        self.succeed(entry, checked, fetched=True)

    def archive(self, source: str, items: list[tuple[ManifestEntry, str]]) -> None:
        """Fetch the archive once (only if a member is still missing), extract the wanted members safely into
        a staging folder, verify each against its row and install it."""
        pending = []
        for entry, member in items:
            if checked := self.installed(entry):
                self.succeed(entry, checked, fetched=False)
            else:
                pending.append((entry, member))
        if not pending:
            return
        failed_before = len(self.report.failed)
        staging = self.out_dir / STAGING
        remote = source.startswith(("http://", "https://"))
        local = Path(source)
        if remote:
            digest = hashlib.blake2b(source.encode(), digest_size=4).hexdigest()
            local = staging / "archives" / f"{digest}_{Path(urlsplit(source).path).name}"
        try:
            if remote and not local.exists():
                with tqdm(desc=f"archive {local.name}", **BAR) as bar:
                    fetch(source, local, self.opts, bar)
            problems = member_problems(local, [member for _, member in pending])
        except ARCHIVE_ERRORS as exc:
            for entry, _ in pending:
                self.fail(entry, f"archive {source}: {_reason(exc)}")
            return
        ok = []
        for entry, member in pending:
            if member in problems:
                self.fail(entry, f"archive member {member!r} refused: {problems[member]}")
            else:
                ok.append((entry, member))
        extract_dir = staging / "members"
        try:
            safe_extract(local, extract_dir, [member for _, member in ok])
        except ARCHIVE_ERRORS as exc:
            for entry, _ in ok:
                self.fail(entry, f"archive {source}: {_reason(exc)}")
            ok = []
        self.memory.mark("archive", archive=source, members=len(ok))
        for entry, member in ok:
            try:
                checked = verify(extract_dir / member, entry)
            except (FetchError, OSError) as exc:
                self.fail(entry, f"archive member {member!r}: {_reason(exc)}")
                continue
            self.final(entry).parent.mkdir(parents=True, exist_ok=True)
            commit(extract_dir / member, self.final(entry))
            self.progress.update(checked[1])
            self.succeed(entry, checked, fetched=True)
        shutil.rmtree(extract_dir, ignore_errors=True)
        if remote and len(self.report.failed) == failed_before:
            local.unlink(missing_ok=True)


def _write_csv(path: Path, columns: Iterable[str], rows: Iterable[dict]) -> None:
    """Write a CSV atomically."""
    with atomic_open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def download_all(
    manifest: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    table: str | os.PathLike[str],
    *,
    failed_csv: str | os.PathLike[str] | None = None,
    chunk_bytes: int,
    retries: int,
    timeout_s: float,
    max_failed_fraction: float,
    backoff_s: float = 1.0,
    memory_log: str | os.PathLike[str] | None = None,
) -> DownloadReport:
    """Fetch every manifest entry into `out_dir/<video_id>` and write `table` (videos.csv, paths relative to
    the current directory) and `failed_csv` (default: next to `table`). Raises DownloadFailed, after
    writing failed.csv and keeping every verified file, when the failed share exceeds max_failed_fraction."""
    manifest, out_dir, table = Path(manifest), Path(out_dir), Path(table)
    failed_csv = Path(failed_csv) if failed_csv is not None else table.parent / "failed.csv"
    memory = MemoryLog(memory_log, "download")
    entries = read_manifest(manifest)
    memory.mark("start", entries=len(entries))
    opts = FetchOptions(chunk_bytes=chunk_bytes, retries=retries, timeout_s=timeout_s, backoff_s=backoff_s)
    total = sum(e.size for e in entries if e.size is not None) or None
    with tqdm(total=total, desc="download", **BAR) as bar:
        run = _Run(out_dir, opts, bar, memory)
        archives: dict[str, list[tuple[ManifestEntry, str]]] = {}
        for entry in entries:
            try:
                source, member = split_source(entry.url, manifest.parent)
            except FetchError as exc:
                run.fail(entry, str(exc))
                continue
            if member is None:
                run.plain(entry, source)
            else:
                archives.setdefault(source, []).append((entry, member))
        for source, items in archives.items():
            run.archive(source, items)
    report = run.report
    if not report.failed:  # a fetched archive is kept only while some of its members still fail
        shutil.rmtree(out_dir / STAGING, ignore_errors=True)
    order = {e.video_id: i for i, e in enumerate(entries)}
    report.rows.sort(key=lambda row: order[row["video_id"]])
    report.failed.sort(key=lambda item: order[item[0].video_id])
    _write_csv(
        failed_csv,
        FAILED_COLUMNS,
        ({"video_id": e.video_id, "url": e.url, "reason": reason} for e, reason in report.failed),
    )
    memory.mark("end", fetched=report.fetched, skipped=report.skipped, failed=len(report.failed))
    log.info(
        "download: %d fetched, %d already present, %d failed (see %s)",
        report.fetched,
        report.skipped,
        len(report.failed),
        failed_csv,
    )
    if report.failed and len(report.failed) > max_failed_fraction * len(entries):
        listed = "\n  ".join(f"{e.video_id} ({e.url}): {reason}" for e, reason in report.failed[:50])
        more = f"\n  ... and {len(report.failed) - 50} more" if len(report.failed) > 50 else ""
        raise DownloadFailed(
            f"{len(report.failed)} of {len(entries)} entries failed (max_failed_fraction "
            f"{max_failed_fraction}); see {failed_csv}:\n  {listed}{more}"
        )
    _write_csv(table, VIDEO_COLUMNS, report.rows)
    return report
