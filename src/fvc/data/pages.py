"""Page URLs through yt-dlp's Python API: YouTube, Facebook and Twitter pages by their own extractors, any
other page by the generic one (an HTML5 `<video>` tag, an og:video meta tag, an HLS playlist). The format
choice is a single file with video (no merging) and HLS goes through yt-dlp's native downloader, so no
ffmpeg binary is needed. Files land in a staging folder, where yt-dlp's own `.part` continues a killed
download; the caller checks and installs them."""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yt_dlp
from yt_dlp.extractor import gen_extractor_classes
from yt_dlp.networking.exceptions import HTTPError as YtHTTPError

from fvc.core.errors import FvcError
from fvc.data.polite import SitePacer, retry_after_s

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (
    ".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".flv", ".ts", ".mpg", ".mpeg", ".3gp", ".wmv", ".ogv",
)  # fmt: skip
RETRY_STATUSES = (429, 503)


class PageError(FvcError, RuntimeError):
    """yt-dlp could not fetch the page's video; the message is its reason (removed, private, 404, ...)."""


@dataclass(frozen=True)
class PageOptions:
    """yt-dlp settings drawn from the config's `download` section."""

    format: str
    timeout_s: float
    retries: int
    backoff_s: float
    retry_after_max_s: float
    per_site_interval_s: float = 0.0
    cookies: str | None = None
    rate_limit: int | None = None


@dataclass(frozen=True)
class PageVideo:
    """The file yt-dlp stored and what it says about it."""

    path: Path
    extractor: str
    format: str
    resolution: str
    duration: float | None
    site_id: str


def has_video_suffix(url: str) -> bool:
    """Whether the URL's path ends in a video file extension (then it is fetched as a file)."""
    return urlsplit(url).path.lower().endswith(VIDEO_SUFFIXES)


@functools.cache
def _site_extractors() -> tuple[Any, ...]:
    return tuple(ie for ie in gen_extractor_classes() if ie.ie_key() != "Generic")


def site_extractor(url: str) -> str | None:
    """The yt-dlp extractor made for the URL's site (Youtube, Facebook, Twitter, ...); None for any other."""
    return next((ie.ie_key() for ie in _site_extractors() if ie.suitable(url)), None)


class _Logger:
    """yt-dlp's messages into our log; its errors become the reason of the failure (logged there)."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def warning(self, msg: str) -> None:
        log.info("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)


def clean_reason(message: str) -> str:
    """yt-dlp's error message as a one-line reason: no colours, no `ERROR:` prefix, no `(caused by ...)`."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", message).strip().splitlines()[0]
    text = text.removeprefix("ERROR: ")
    text = re.sub(r" \(caused by .*\)$", "", text)
    return re.sub(r";? ?please report this issue on .*$", "", text).strip()


def _http_error(exc: BaseException) -> YtHTTPError | None:
    """The HTTP error behind a yt-dlp DownloadError, if any."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, YtHTTPError):
            return current
        exc_info = getattr(current, "exc_info", None)
        todo += [getattr(current, "cause", None), current.__cause__, exc_info[1] if exc_info else None]
    return None


def ydl_options(opts: PageOptions, outtmpl: str) -> dict[str, Any]:
    """The YoutubeDL parameters of one page download."""
    backoff = functools.partial(lambda base, n: base * 2**n, opts.backoff_s)
    return {
        "quiet": True,
        "noprogress": True,
        "logger": _Logger(),
        "noplaylist": True,
        "playlist_items": "1",
        "format": opts.format,
        "outtmpl": outtmpl,
        "continuedl": True,
        "fixup": "never",
        "retries": opts.retries,
        "fragment_retries": opts.retries,
        "extractor_retries": opts.retries,
        "retry_sleep_functions": {"http": backoff, "fragment": backoff, "extractor": backoff},
        "socket_timeout": opts.timeout_s,
        "sleep_interval_requests": opts.per_site_interval_s,  # between the extractor's requests
        "sleep_interval": opts.per_site_interval_s,  # before the download itself
        "ratelimit": opts.rate_limit,
        "cookiefile": opts.cookies,
    }


def _chosen(info: dict[str, Any]) -> dict[str, Any]:
    """The single video of an extraction (the first entry of a page that holds several)."""
    while info.get("entries") is not None:
        entries = [e for e in info["entries"] if e]
        if not entries:
            raise PageError("the page lists no video")
        info = entries[0]
    return info


def fetch_page(url: str, stem: Path, opts: PageOptions, pacer: SitePacer) -> PageVideo:
    """Download the page's video to `stem`.<ext> (yt-dlp's .part there continues a killed download),
    retrying after a 429/503 as Retry-After asks (a hold on the site for every shard: `pacer`); PageError
    with yt-dlp's reason otherwise."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    outtmpl = str(stem).replace("%", "%%") + ".%(ext)s"
    for attempt in range(opts.retries + 1):
        pacer.wait(url)
        try:
            with yt_dlp.YoutubeDL(ydl_options(opts, outtmpl)) as ydl:
                info = ydl.extract_info(url, download=True)
            break
        except yt_dlp.utils.DownloadError as exc:
            http = _http_error(exc)
            reason = clean_reason(str(exc))
            if http is None or http.status not in RETRY_STATUSES or attempt == opts.retries:
                raise PageError(reason) from exc
            asked = retry_after_s(http.response.headers.get("Retry-After"))
            wait = opts.backoff_s * 2**attempt if asked is None else min(asked, opts.retry_after_max_s)
            log.warning("%s: %s; retrying in %.1f s", url, reason, wait)
            pacer.hold(url, wait)  # every worker and shard keeps off the site, not only this one
    if not info:
        raise PageError("yt-dlp found no video on the page")
    info = _chosen(info)
    downloads = info.get("requested_downloads") or []
    if not downloads or not downloads[0].get("filepath"):
        raise PageError("yt-dlp stored no file")
    width, height = info.get("width"), info.get("height")
    return PageVideo(
        path=Path(downloads[0]["filepath"]),
        extractor=str(info.get("extractor") or ""),
        format=str(info.get("format_id") or ""),
        resolution=f"{width}x{height}" if width and height else "",
        duration=info.get("duration"),
        site_id=str(info.get("id") or ""),
    )
