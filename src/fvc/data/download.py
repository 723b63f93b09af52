"""Download stage: fetch every manifest entry, a few at a time and politely (a pause between requests to
one site, Retry-After honoured): direct file URLs with Range resume, page URLs (YouTube, Facebook, Twitter,
HTML5 video, og:video, HLS) through yt-dlp, file:// and local paths, archive members. Every fetch is checked
to be a video (Content-Type and leading bytes: an HTML page never is), verified against size and sha256
when given, installed atomically and recorded in a download archive, so a rerun skips what is stored and
verified. Dead links are normal: each is a row of failed.csv, and a summary counts the losses per label
and per cascade."""

from __future__ import annotations

import csv
import fcntl
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import tarfile
import threading
import time
import urllib.request
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlsplit

from tqdm import tqdm

from fvc.core.atomic import atomic_open, commit, disk_space_errors
from fvc.core.errors import FvcError
from fvc.core.memory import MemoryLog
from fvc.core.paths import DownloadFiles
from fvc.core.progress import progress
from fvc.core.shards import shard_of
from fvc.data.archive import member_problems, safe_extract
from fvc.data.manifest import LabelMap, Manifest, ManifestEntry, read_manifests
from fvc.data.pages import PageError, PageOptions, fetch_page, has_video_suffix, site_extractor
from fvc.data.polite import SitePacer, flocked, retry_after_s
from fvc.data.sniff import HEAD_BYTES, check_file, not_a_video

log = logging.getLogger(__name__)

VIDEO_COLUMNS = (
    "video_id", "path", "label", "group", "sha256", "size",
    "url", "extractor", "format", "resolution", "duration", "site_id",
)  # fmt: skip
FAILED_COLUMNS = ("video_id", "url", "label", "group", "reason")
STAGING = ".staging"
ARCHIVE = ".download_archive.jsonl"  # one JSON record per stored video (like yt-dlp's download archive)
SUMMARY = "failed_summary.json"
DEAD_STATUSES = (404, 410)
RETRY_STATUSES = (429, 503)
USER_AGENT = "fvc-download/0.1"
BAR: dict[str, Any] = {"unit": "B", "unit_scale": True, "unit_divisor": 1024, "mininterval": 2}


class FetchError(FvcError, RuntimeError):
    """One source could not be fetched or verified; the message is the reason."""


class NotAVideo(FetchError):
    """The answer is no video (an HTML page, JSON, text, empty); never retried."""


# What reading a fetched archive may raise: missing or truncated file, bad gzip/tar/zip, unsafe member.
ARCHIVE_ERRORS = (FetchError, OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile, ValueError)


class DownloadFailed(FvcError, RuntimeError):
    """More entries failed than `max_failed_fraction` allows; the message lists them."""


@dataclass(frozen=True)
class FetchOptions:
    """How to fetch: the per-site pacing (shared by every shard), chunk size, retries with exponential
    backoff, the per-request timeout and the longest Retry-After honoured."""

    pacer: SitePacer
    chunk_bytes: int = 262144
    retries: int = 3
    timeout_s: float = 30.0
    backoff_s: float = 1.0
    retry_after_max_s: float = 120.0


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


def _media_type(resp: Any) -> str:
    return (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()


def _http_attempt(url: str, part: Path, opts: FetchOptions, progress: tqdm) -> None:
    """One request, resuming from the bytes already in `part`; FetchError if the body ends early, NotAVideo
    when the answer's Content-Type and first bytes say it is no video."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=opts.timeout_s)
    except HTTPError as exc:
        if exc.code == 416 and part.exists():  # our offset is past the end: start over
            part.unlink()
            raise FetchError("range past the end of the file; starting over") from exc
        raise
    with resp:
        if offset and resp.status != 206:
            log.info("%s: server ignored the Range request; starting over", url)
            offset = 0
        total = _content_total(resp, offset)
        needed = None if total is None else total - offset
        first = b"" if offset else resp.read(HEAD_BYTES)
        if not offset and (problem := not_a_video(first, _media_type(resp))):
            raise NotAVideo(problem)
        with disk_space_errors(part.parent, needed), open(part, "ab" if offset else "wb") as out:
            out.write(first)
            progress.update(len(first))
            while chunk := resp.read(opts.chunk_bytes):
                out.write(chunk)
                progress.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise FetchError(f"connection closed after {size} of {total} bytes")


def _wait_after(exc: HTTPError, attempt: int, opts: FetchOptions) -> float:
    """The pause before the next attempt: what Retry-After asks (429/503, capped), else the backoff."""
    asked = retry_after_s(exc.headers.get("Retry-After")) if exc.code in RETRY_STATUSES else None
    return opts.backoff_s * 2**attempt if asked is None else min(asked, opts.retry_after_max_s)


def with_retries(url: str, opts: FetchOptions, attempt_once: Any) -> Any:
    """`attempt_once()` with retries: paced per site, exponential backoff, Retry-After honoured on 429/503
    (a hold on the whole site, for every worker and shard). Client errors (404, 403, ...) and NotAVideo are
    not retried."""
    last, wait = "no attempt", 0.0
    for attempt in range(opts.retries + 1):
        if attempt:
            time.sleep(wait)
        opts.pacer.wait(url)
        try:
            return attempt_once()
        except HTTPError as exc:
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise FetchError(_reason(exc)) from exc
            last, wait = _reason(exc), _wait_after(exc, attempt, opts)
            if exc.code in RETRY_STATUSES:
                opts.pacer.hold(url, wait)
        except NotAVideo:
            raise
        except (FetchError, URLError, OSError, http.client.HTTPException) as exc:
            last, wait = _reason(exc), opts.backoff_s * 2**attempt
        log.warning("%s: attempt %d of %d failed: %s", url, attempt + 1, opts.retries + 1, last)
    raise FetchError(f"gave up after {opts.retries + 1} attempts: {last}")


def fetch_http(url: str, part: Path, opts: FetchOptions, progress: tqdm) -> None:
    """Stream `url` into `part`, retrying with backoff and resuming with HTTP Range after an interruption."""
    with_retries(url, opts, lambda: _http_attempt(url, part, opts, progress))


def probe_media_type(url: str, opts: FetchOptions) -> str:
    """The Content-Type a HEAD request for `url` answers ('' when the server refuses HEAD); FetchError for a
    dead link (404, 410) or a server that cannot be reached."""

    def head() -> str:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT}, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=opts.timeout_s) as resp:
                return _media_type(resp)
        except HTTPError as exc:
            if exc.code in DEAD_STATUSES or exc.code in RETRY_STATUSES or exc.code >= 500:
                raise
            return ""  # HEAD refused (405, 403, ...): let the page extractor try

    return with_retries(url, opts, head)


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
    """Fetch `source` into `dest` through `dest.part`; for an `entry`, check that it is a video and verify
    it (returning its (sha256, size)), then rename atomically. A part that fails is removed."""
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
            if problem := check_file(part):
                raise NotAVideo(problem)
            checked = verify(part, entry)
        except FetchError:
            part.unlink()
            raise
    commit(part, dest)
    return checked


@dataclass(frozen=True)
class Stored:
    """What is known of a stored video: its checksum and size, and where and how it was fetched."""

    sha256: str
    size: int
    extractor: str = ""
    format: str = ""
    resolution: str = ""
    duration: float | None = None
    site_id: str = ""


class DownloadArchive:
    """The videos stored so far, one JSON line each (video_id, url and Stored fields), appended as each is
    installed; a rerun skips a video whose file still has the recorded sha256."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, Stored] = {}
        self._lock = threading.Lock()
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                    self.records[record.pop("video_id")] = Stored(
                        **{k: record[k] for k in Stored.__dataclass_fields__}
                    )
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a kill: that video is verified again

    def add(self, video_id: str, url: str, stored: Stored) -> None:
        line = json.dumps({"video_id": video_id, "url": url, **stored.__dict__}) + "\n"
        with self._lock:
            self.records[video_id] = stored
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)  # shards append to one archive; close flushes, then unlocks
                fh.write(line)


def archive_copy(out_dir: Path, source: str) -> Path:
    """Where a remote archive is kept while its members are extracted (shared by the shards)."""
    digest = hashlib.blake2b(source.encode(), digest_size=4).hexdigest()
    return out_dir / STAGING / "archives" / f"{digest}_{Path(urlsplit(source).path).name}"


class _Run:
    """State of one download shard: where files go (`members_dir`: its own folder for extracted archive
    members), options, progress, the archive and the report being filled (by several worker threads)."""

    def __init__(
        self,
        out_dir: Path,
        members_dir: Path,
        opts: FetchOptions,
        pages: PageOptions,
        progress: tqdm,
        memory: MemoryLog,
    ) -> None:
        self.out_dir, self.members_dir = out_dir, members_dir
        self.opts, self.pages, self.progress, self.memory = opts, pages, progress, memory
        self.report = DownloadReport()
        self.archive_log = DownloadArchive(out_dir / ARCHIVE)
        self._lock = threading.Lock()

    def final(self, entry: ManifestEntry) -> Path:
        return self.out_dir / entry.video_id

    def succeed(self, entry: ManifestEntry, stored: Stored, fetched: bool) -> None:
        row = {"video_id": entry.video_id, "path": os.path.relpath(self.final(entry)), "label": entry.label,
               "group": entry.group, "url": entry.url, **stored.__dict__}  # fmt: skip
        if fetched:
            self.archive_log.add(entry.video_id, entry.url, stored)
        with self._lock:
            self.report.rows.append(row)
            if fetched:
                self.report.fetched += 1
            else:
                self.report.skipped += 1
                self.progress.update(stored.size)
            self.memory.mark("video", full=False, video_id=entry.video_id, fetched=fetched)

    def fail(self, entry: ManifestEntry, reason: str) -> None:
        log.error("%s (%s): %s", entry.video_id, entry.url, reason)
        with self._lock:
            self.report.failed.append((entry, reason))
            self.memory.mark("video", full=False, video_id=entry.video_id, failed=reason)

    def installed(self, entry: ManifestEntry) -> Stored | None:
        """What is known of the installed file when it verifies (against the archive's record, the entry's
        checksum and size, and as a video); a file that does not is removed."""
        path = self.final(entry)
        if not path.is_file():
            return None
        record = self.archive_log.records.get(entry.video_id)
        try:
            sha, size = verify(path, entry)
            if record is not None and (sha, size) != (record.sha256, record.size):
                raise FetchError("it differs from the download archive's record")
            if record is None and (problem := check_file(path)):
                raise FetchError(problem)
        except FetchError as exc:
            log.warning("%s: installed file fails verification (%s); fetching it again", entry.video_id, exc)
            path.unlink()
            return None
        return record or Stored(sha, size, extractor="stored")

    def plain(self, entry: ManifestEntry) -> None:
        """A video fetched on its own: a page through yt-dlp, a file URL or a local path."""
        if stored := self.installed(entry):
            self.succeed(entry, stored, fetched=False)
            return
        try:
            source, _ = split_source(entry.url, entry.base)
            if source.startswith(("http://", "https://")) and self.is_page(source):
                stored = self.page(entry, source)
            else:
                checked = fetch(source, self.final(entry), self.opts, self.progress, entry)
                assert checked is not None, "fetch verifies against an entry"
                remote = source.startswith(("http://", "https://"))
                stored = Stored(*checked, extractor="http" if remote else "local")
        except (FetchError, PageError) as exc:
            self.fail(entry, str(exc))
            return
        self.succeed(entry, stored, fetched=True)

    def is_page(self, url: str) -> bool:
        """A URL is a file when its path ends in a video extension or a HEAD says video/*; a page (for
        yt-dlp) when a site extractor claims it or the HEAD says anything else."""
        if has_video_suffix(url):
            return False
        if site_extractor(url):
            return True
        return not probe_media_type(url, self.opts).startswith("video/")

    def page(self, entry: ManifestEntry, url: str) -> Stored:
        """Fetch a page's video with yt-dlp into the staging folder, check it, verify it and install it."""
        stem = self.out_dir / STAGING / "pages" / entry.video_id
        video = fetch_page(url, stem, self.pages, self.opts.pacer)
        try:
            if problem := check_file(video.path):
                raise NotAVideo(problem)
            sha, size = verify(video.path, entry)
        except FetchError:
            video.path.unlink(missing_ok=True)
            raise
        self.final(entry).parent.mkdir(parents=True, exist_ok=True)
        commit(video.path, self.final(entry))
        self.progress.update(size)
        return Stored(
            sha, size, video.extractor, video.format, video.resolution, video.duration, video.site_id
        )

    def archive(self, source: str, items: list[tuple[ManifestEntry, str]]) -> None:
        """Fetch the archive once for every shard (only if a member is still missing; under a lock, so one
        shard fetches while the others wait), extract the wanted members safely into this shard's staging
        folder, verify each against its row and install it. The merge removes the archive once every member
        of it is stored."""
        pending = []
        for entry, member in items:
            if stored := self.installed(entry):
                self.succeed(entry, stored, fetched=False)
            else:
                pending.append((entry, member))
        if not pending:
            return
        remote = source.startswith(("http://", "https://"))
        local = archive_copy(self.out_dir, source) if remote else Path(source)
        try:
            if remote:
                with flocked(local.with_name(local.name + ".lock")):
                    if not local.exists():
                        with progress(desc=f"archive {local.name}", **BAR) as bar:
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
        extract_dir = self.members_dir
        try:
            safe_extract(local, extract_dir, [member for _, member in ok])
        except ARCHIVE_ERRORS as exc:
            for entry, _ in ok:
                self.fail(entry, f"archive {source}: {_reason(exc)}")
            ok = []
        self.memory.mark("archive", archive=source, members=len(ok))
        for entry, member in ok:
            try:
                if problem := check_file(extract_dir / member):
                    raise NotAVideo(problem)
                checked = verify(extract_dir / member, entry)
            except (FetchError, OSError) as exc:
                self.fail(entry, f"archive member {member!r}: {_reason(exc)}")
                continue
            self.final(entry).parent.mkdir(parents=True, exist_ok=True)
            commit(extract_dir / member, self.final(entry))
            self.progress.update(checked[1])
            self.succeed(entry, Stored(*checked, extractor="archive"), fetched=True)
        shutil.rmtree(extract_dir, ignore_errors=True)


def _write_csv(path: Path, columns: Iterable[str], rows: Iterable[dict]) -> None:
    """Write a CSV atomically."""
    with atomic_open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def loss_summary(manifest: Manifest, failed: Sequence[tuple[ManifestEntry, str]]) -> dict[str, Any]:
    """How many videos were lost, per label (as written in the manifest) and per cascade (group), with the
    rows the label map dropped and the repeated URLs."""
    lost = {entry.video_id for entry, _ in failed}

    def tally(key: Any) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for entry in manifest.entries:
            counts = table.setdefault(key(entry), {"entries": 0, "failed": 0, "stored": 0})
            counts["entries"] += 1
            counts["failed" if entry.video_id in lost else "stored"] += 1
        return table

    cascades = tally(lambda e: e.group)
    return {
        "entries": len(manifest.entries),
        "stored": len(manifest.entries) - len(lost),
        "failed": len(lost),
        "dropped_by_label_map": dict(manifest.dropped),
        "repeated_urls": manifest.repeats,
        "cascades_lost_entirely": sorted(g for g, c in cascades.items() if c["stored"] == 0),
        "reasons": dict(Counter(re.sub(r"\d+ of \d+", "N of M", r)[:120] for _, r in failed).most_common(20)),
        "by_label": tally(lambda e: e.label_name.lower() or str(e.label)),
        "by_cascade": cascades,
    }


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _failed_rows(failed: Iterable[tuple[ManifestEntry, str]]) -> Iterable[dict[str, str]]:
    for entry, reason in failed:
        yield {"video_id": entry.video_id, "url": entry.url, "label": entry.label_name, "group": entry.group,
               "reason": reason}  # fmt: skip


def download_shard(
    manifest: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    table: str | os.PathLike[str],
    failed_csv: str | os.PathLike[str],
    sites_dir: str | os.PathLike[str],
    *,
    shard: int,
    count: int,
    labels: LabelMap | None = None,
    chunk_bytes: int,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    workers: int,
    per_site_interval_s: float,
    retry_after_max_s: float,
    format: str,
    cookies: str | None,
    rate_limit: int | None,
    memory_log: str | os.PathLike[str] | None = None,
) -> DownloadReport:
    """Fetch the manifest entries of shard `shard` of `count` (fvc.core.shards.shard_of) into
    `out_dir/<video_id>` with `workers` threads, and write the shard's `table` (its videos.csv rows) and
    `failed_csv` (its failures with their reasons), both in the manifest's order. The pause between requests
    to a site and Retry-After holds are shared through `sites_dir` with every other shard (SitePacer)."""
    out_dir = Path(out_dir)
    memory = MemoryLog(memory_log, "download")
    entries = [e for e in read_manifests(manifest, labels).entries if shard_of(e.video_id, count) == shard]
    memory.mark("start", entries=len(entries), shard=shard, count=count)
    pacer = SitePacer(per_site_interval_s, sites_dir)
    opts = FetchOptions(pacer, chunk_bytes, retries, timeout_s, backoff_s, retry_after_max_s)
    pages = PageOptions(
        format, timeout_s, retries, backoff_s, retry_after_max_s, per_site_interval_s, cookies, rate_limit
    )
    total = sum(e.size for e in entries if e.size is not None) or None
    with progress(total=total, desc=f"download shard {shard} of {count}", **BAR) as bar:
        run = _Run(out_dir, out_dir / STAGING / f"members-{shard}-of-{count}", opts, pages, bar, memory)
        archives: dict[str, list[tuple[ManifestEntry, str]]] = {}
        singles: list[ManifestEntry] = []
        for entry in entries:
            try:
                source, member = split_source(entry.url, entry.base)
            except FetchError as exc:
                run.fail(entry, str(exc))
                continue
            if member is None:
                singles.append(entry)
            else:
                archives.setdefault(source, []).append((entry, member))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="download") as pool:
            for done in [pool.submit(run.plain, entry) for entry in singles]:
                done.result()  # a full disk (DiskFullError) stops the stage
        for source, items in archives.items():
            run.archive(source, items)
    report = run.report
    order = {e.video_id: i for i, e in enumerate(entries)}
    report.rows.sort(key=lambda row: order[row["video_id"]])
    report.failed.sort(key=lambda item: order[item[0].video_id])
    _write_csv(Path(failed_csv), FAILED_COLUMNS, _failed_rows(report.failed))
    _write_csv(Path(table), VIDEO_COLUMNS, report.rows)
    memory.mark("end", fetched=report.fetched, skipped=report.skipped, failed=len(report.failed))
    log.info(
        "download shard %d of %d: %d fetched, %d already present, %d failed (see %s)",
        shard, count, report.fetched, report.skipped, len(report.failed), failed_csv,
    )  # fmt: skip
    return report


def _remove_staging(out_dir: Path, listed: Manifest, lost: set[str]) -> None:
    """Remove the staging folder when nothing failed, else each remote archive whose members are all stored
    (a fetched archive or page part is kept only while something of it still fails)."""
    if not lost:
        shutil.rmtree(out_dir / STAGING, ignore_errors=True)
        return
    archives: dict[str, bool] = {}
    for entry in listed.entries:
        try:
            source, member = split_source(entry.url, entry.base)
        except FetchError:
            continue
        if member is not None and source.startswith(("http://", "https://")):
            archives[source] = archives.get(source, True) and entry.video_id not in lost
    for source, stored in archives.items():
        if stored:
            archive_copy(out_dir, source).unlink(missing_ok=True)


def merge_shards(
    manifest: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    shards: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str]]],
    table: str | os.PathLike[str],
    failed_csv: str | os.PathLike[str],
    *,
    labels: LabelMap | None = None,
    max_failed_fraction: float,
    memory_log: str | os.PathLike[str] | None = None,
) -> DownloadReport:
    """Merge the shards' (videos.csv, failed.csv) tables into `table` (videos.csv), `failed_csv` and the
    loss summary beside it, in the manifest's order, so that they are the same bytes for any shard count.
    Raises FvcError when the shards do not cover the manifest exactly once, and DownloadFailed (after
    writing failed.csv and the summary) when the failed share of the whole dataset exceeds
    max_failed_fraction."""
    out_dir, table, failed_csv = Path(out_dir), Path(table), Path(failed_csv)
    summary_json = failed_csv.with_name(SUMMARY)
    memory = MemoryLog(memory_log, "download")
    memory.mark("start", shards=len(shards))
    listed = read_manifests(manifest, labels)
    entries = {e.video_id: e for e in listed.entries}
    stored: dict[str, dict[str, str]] = {}
    reasons: dict[str, str] = {}
    for videos, failed in shards:
        stored.update((row["video_id"], row) for row in _read_csv(Path(videos)))
        reasons.update((row["video_id"], row["reason"]) for row in _read_csv(Path(failed)))
    missing = [v for v in entries if v not in stored and v not in reasons]
    extra = [v for v in (*stored, *reasons) if v not in entries or (v in stored and v in reasons)]
    if missing or extra:
        raise FvcError(
            f"the download shards' tables do not match the manifest: {len(missing)} entries in no shard "
            f"({', '.join(missing[:5])}), {len(extra)} unknown or twice ({', '.join(extra[:5])}); rerun the "
            "download shards"
        )
    report = DownloadReport(
        rows=[stored[v] for v in entries if v in stored],
        failed=[(entry, reasons[v]) for v, entry in entries.items() if v in reasons],
    )
    _remove_staging(out_dir, listed, set(reasons))
    _write_csv(failed_csv, FAILED_COLUMNS, _failed_rows(report.failed))
    summary = loss_summary(listed, report.failed)
    with atomic_open(summary_json, "w") as fh:
        json.dump(summary, fh, indent=1)
    memory.mark("end", shards=len(shards), stored=len(report.rows), failed=len(report.failed))
    per_label = ", ".join(
        f"{label} {c['failed']} of {c['entries']}" for label, c in summary["by_label"].items()
    )
    log.info(
        "download: %d stored, %d failed (see %s); lost per label: %s; cascades lost entirely: %d of %d "
        "(see %s)",
        len(report.rows), len(report.failed), failed_csv, per_label,
        len(summary["cascades_lost_entirely"]), len(summary["by_cascade"]), summary_json,
    )  # fmt: skip
    if report.failed and len(report.failed) > max_failed_fraction * len(entries):
        listed_lines = "\n  ".join(f"{e.video_id} ({e.url}): {reason}" for e, reason in report.failed[:50])
        more = f"\n  ... and {len(report.failed) - 50} more" if len(report.failed) > 50 else ""
        raise DownloadFailed(
            f"{len(report.failed)} of {len(entries)} entries failed (max_failed_fraction "
            f"{max_failed_fraction}); see {failed_csv} and {summary_json}:\n  {listed_lines}{more}"
        )
    _write_csv(table, VIDEO_COLUMNS, report.rows)
    return report


def download_all(
    manifest: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    table: str | os.PathLike[str],
    *,
    failed_csv: str | os.PathLike[str] | None = None,
    labels: LabelMap | None = None,
    chunk_bytes: int,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    max_failed_fraction: float,
    workers: int,
    per_site_interval_s: float,
    retry_after_max_s: float,
    format: str,
    cookies: str | None,
    rate_limit: int | None,
    memory_log: str | os.PathLike[str] | None = None,
) -> DownloadReport:
    """The whole download in this process (`fvc download`): one shard of one, then the merge. Fetches every
    entry into `out_dir/<video_id>` and writes `table` (videos.csv, paths relative to the current
    directory), `failed_csv` (default: next to `table`) and the loss summary (failed_summary.json beside
    it); the shard's tables and the per-site state go under `table`'s folder (`shards/0-of-1`, `sites`).
    `labels` maps manifest labels (default: the schema's dataset.labels). Raises DownloadFailed, after
    writing failed.csv and the summary and keeping every verified file, when the failed share exceeds
    max_failed_fraction."""
    table = Path(table)
    failed_csv = Path(failed_csv) if failed_csv is not None else table.parent / "failed.csv"
    folder = DownloadFiles(table.parent)
    shard = folder.shard(0, 1)
    fetched = download_shard(
        manifest, out_dir, shard.videos_csv, shard.failed_csv, folder.sites_dir, shard=0, count=1,
        labels=labels, chunk_bytes=chunk_bytes, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s,
        workers=workers, per_site_interval_s=per_site_interval_s, retry_after_max_s=retry_after_max_s,
        format=format, cookies=cookies, rate_limit=rate_limit, memory_log=memory_log,
    )  # fmt: skip
    report = merge_shards(
        manifest, out_dir, [(shard.videos_csv, shard.failed_csv)], table, failed_csv, labels=labels,
        max_failed_fraction=max_failed_fraction, memory_log=memory_log,
    )  # fmt: skip
    report.fetched, report.skipped = fetched.fetched, fetched.skipped
    return report
