"""A loopback site in the shapes real video links take: a page with an HTML5 <video> tag, a page with an
og:video meta tag, an HLS playlist (m3u8 + MPEG-TS segments made with PyAV), a direct mp4, a 404, a 410, a
429 with Retry-After (then OK), an HTML page at a .mp4 URL; `StallingServer` gives a server that stalls."""

from __future__ import annotations

from pathlib import Path

from http_server import Answer, LoopbackServer
from video_factory import make_video

PLAYLIST = (
    "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n"
    "#EXTINF:0.8,\nseg0.ts\n#EXTINF:0.8,\nseg1.ts\n#EXT-X-ENDLIST\n"
)


def page(title: str, head: str = "", body: str = "") -> bytes:
    return (
        f"<!DOCTYPE html><html><head><title>{title}</title>{head}</head><body>{body}</body></html>".encode()
    )


def media(folder: Path, frames: int = 40) -> dict[str, bytes]:
    """An mp4, a second mp4 and an MPEG-TS file cut into two HLS segments at a 188-byte packet boundary."""
    mp4 = make_video(folder / "a.mp4", frames, size=(64, 48)).read_bytes()
    og = make_video(folder / "og.mp4", frames, size=(80, 48)).read_bytes()
    ts = make_video(folder / "hls.ts", frames, size=(64, 48), container="mpegts").read_bytes()
    half = len(ts) // 2 // 188 * 188
    return {
        "/media/a.mp4": mp4,
        "/media/og.mp4": og,
        "/media/direct.mp4": mp4,
        "/media/busy.mp4": og,
        "/hls/seg0.ts": ts[:half],
        "/hls/seg1.ts": ts[half:],
        "/hls/index.m3u8": PLAYLIST.encode(),
    }


def loopback_site(folder: Path) -> LoopbackServer:
    """The site (not started: use it as a context manager)."""
    srv = LoopbackServer(media(folder))
    srv.answer("/watch/video-tag", Answer(200, page("v", body='<video controls src="/media/a.mp4"></video>')))
    og = '<meta property="og:video" content="/media/og.mp4">'
    srv.answer("/watch/og-video", Answer(200, page("o", head=og)))
    srv.answer("/watch/removed", Answer(404, page("Not Found")))
    srv.answer("/watch/gone", Answer(410, page("Gone")))
    srv.answer("/media/busy.mp4", Answer(429, page("Slow down"), {"Retry-After": "1"}, times=1))
    srv.answer("/media/login.mp4", Answer(200, page("Log in to see this video")))
    return srv
