"""Page URLs through yt-dlp and the download's politeness against a real loopback site: <video> tag,
og:video, HLS, dead links, Retry-After, HTML at a .mp4 URL, a stalled server, the per-site pause, the
download archive on a rerun, and the magic check of what a fetch stored."""

from __future__ import annotations

import csv
import hashlib
import json

import pytest
from http_server import Answer, StallingServer
from loopback_site import loopback_site

from fvc.core.schema import defaults
from fvc.data.download import ARCHIVE, download_all
from fvc.data.manifest import video_id_from_url
from fvc.data.pages import clean_reason, has_video_suffix, site_extractor
from fvc.data.polite import retry_after_s
from fvc.data.sniff import container, not_a_video

pytestmark = pytest.mark.usefixtures("in_tmp_path")


def fvc_csv(path, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["cascade_id", "video_url", "label"])
        writer.writerows(rows)
    return path


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def run(tmp_path, manifest, **kwargs):
    options = {**defaults()["download"], "timeout_s": 1, "retries": 1, "backoff_s": 0.05,
               "per_site_interval_s": 0, **kwargs}  # fmt: skip
    return download_all(manifest, tmp_path / "videos", tmp_path / "videos.csv", **options)


def test_each_kind_of_link_gives_a_video_or_its_reason(tmp_path):
    with loopback_site(tmp_path) as srv, StallingServer() as stall:
        cases = {
            "video-tag": srv.url("/watch/video-tag"),
            "og-video": srv.url("/watch/og-video"),
            "hls": srv.url("/hls/index.m3u8"),
            "direct": srv.url("/media/direct.mp4"),
            "busy": srv.url("/media/busy.mp4"),
            "removed": srv.url("/watch/removed"),
            "gone": srv.url("/watch/gone"),
            "login": srv.url("/media/login.mp4"),
            "stalled": stall.url("/stalled.mp4"),
        }
        manifest = fvc_csv(tmp_path / "FVC.csv", [(name, url, "fake") for name, url in cases.items()])
        report = run(tmp_path, manifest)
        busy = srv.times("/media/busy.mp4")
        served = srv.files
    stored = {row["group"]: row for row in read_csv(tmp_path / "videos.csv")}
    failed = {row["group"]: row["reason"] for row in read_csv(tmp_path / "failed.csv")}
    assert set(stored) == {"video-tag", "og-video", "hls", "direct", "busy"}
    assert failed == {
        "removed": "HTTP 404 Not Found",
        "gone": "HTTP 410 Gone",
        "login": "an HTML page, not a video (Content-Type text/html)",
        "stalled": "gave up after 2 attempts: TimeoutError: timed out",
    }
    expected = {"video-tag": "/media/a.mp4", "og-video": "/media/og.mp4", "direct": "/media/direct.mp4",
                "busy": "/media/busy.mp4"}  # fmt: skip
    for group, path in expected.items():
        assert stored[group]["sha256"] == hashlib.sha256(served[path]).hexdigest(), group
    hls = served["/hls/seg0.ts"] + served["/hls/seg1.ts"]
    assert stored["hls"]["sha256"] == hashlib.sha256(hls).hexdigest(), "segments joined without ffmpeg"
    assert [stored[g]["extractor"] for g in ("video-tag", "og-video", "hls", "direct")] == [
        "html5", "generic", "generic", "http",
    ]  # fmt: skip
    assert all(stored[g]["site_id"] for g in ("video-tag", "og-video", "hls")), "yt-dlp's id is recorded"
    assert float(stored["hls"]["duration"]) > 0, "the playlist's duration is recorded"
    assert len(busy) == 2 and busy[1] - busy[0] >= 1.0, "the 429's Retry-After: 1 is honoured"
    assert len(report.rows) == 5 and not list((tmp_path / "videos").rglob("*.part"))


def test_per_site_pause_spaces_requests_to_one_host(tmp_path):
    with loopback_site(tmp_path) as srv:
        urls = [srv.url(p) for p in ("/media/a.mp4", "/media/og.mp4", "/media/direct.mp4")]
        manifest = fvc_csv(tmp_path / "FVC.csv", [(f"c{i}", url, "real") for i, url in enumerate(urls)])
        run(tmp_path, manifest, workers=3, per_site_interval_s=0.4)
        starts = sorted(t for _, path, t in srv.log)
    assert len(starts) == 3
    assert min(b - a for a, b in zip(starts, starts[1:], strict=False)) >= 0.38


def test_rerun_skips_archived_videos_and_refetches_a_changed_one(tmp_path):
    with loopback_site(tmp_path) as srv:
        urls = {"page": srv.url("/watch/video-tag"), "file": srv.url("/media/direct.mp4")}
        manifest = fvc_csv(tmp_path / "FVC.csv", [(name, url, "fake") for name, url in urls.items()])
        first = run(tmp_path, manifest)
        records = [json.loads(line) for line in (tmp_path / "videos" / ARCHIVE).read_text().splitlines()]
        assert {r["url"] for r in records} == set(urls.values())
        requests = dict(srv.requests)
        again = run(tmp_path, manifest)
        assert dict(srv.requests) == requests, "stored and verified videos are not fetched again"
        assert (first.fetched, again.fetched, again.skipped) == (2, 0, 2)
        assert read_csv(tmp_path / "videos.csv")[0]["extractor"] == "html5", "the archive keeps the metadata"
        page = next(row for row in first.rows if row["url"] == urls["page"])
        (tmp_path / page["path"]).write_bytes(b"\x00" * 10)  # damaged since: fetched again
        third = run(tmp_path, manifest)
        assert (third.fetched, third.skipped) == (1, 1)
        assert srv.requests["/media/a.mp4"] == requests["/media/a.mp4"] + 1


def test_html_answer_from_a_page_is_never_a_video(tmp_path):
    with loopback_site(tmp_path) as srv:
        srv.answer("/media/a.mp4", Answer(200, b"<html><body>sign in</body></html>"))
        manifest = fvc_csv(tmp_path / "FVC.csv", [("c1", srv.url("/watch/video-tag"), "fake")])
        report = run(tmp_path, manifest, max_failed_fraction=1)
    assert [reason for _, reason in report.failed] == ["an HTML page, not a video"]
    assert not [p for p in (tmp_path / "videos").rglob("*") if p.is_file() and p.name != ARCHIVE]


@pytest.mark.parametrize(
    ("head", "content_type", "reason"),
    [
        (b"", None, "empty file"),
        (b"\n  <!DOCTYPE html><html>", None, "an HTML page, not a video"),
        (
            b'{"error": "private video"}',
            "application/json",
            "a JSON document, not a video (Content-Type application/json)",
        ),
        (b"<?xml version='1.0'?><Error/>", None, "an XML document, not a video"),
        (b"#EXTM3U\n#EXT-X-VERSION:3\n", None, "a text file, not a video"),
        (b"\x00\x01\x02\xff" * 8, "text/plain", "Content-Type text/plain, not a video"),
        (b"\x00\x00\x00\x20ftypisom" + b"\x00" * 20, "text/html", None),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", None, None),
        (b"RIFF\x00\x10\x00\x00AVI LIST", None, None),
        (b"\x47" + b"\x00" * 187 + b"\x47\x00", None, None),
        (b"FLV\x01\x05", None, None),
        (bytes(range(256)), "application/octet-stream", None),
    ],
)
def test_magic_check(head, content_type, reason):
    assert not_a_video(head, content_type) == reason


def test_containers_are_named():
    assert container(b"\x00\x00\x00\x18ftypmp42") == "mp4/mov"
    assert container(b"\x1a\x45\xdf\xa3") == "webm/mkv"
    assert container(b"<html>") is None


def test_retry_after_seconds_and_http_date():
    assert retry_after_s("7") == 7.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None


def test_page_or_file_and_reasons():
    assert has_video_suffix("https://cdn.example.org/v/clip.MP4?sig=1")
    assert not has_video_suffix("https://www.youtube.com/watch?v=abc")
    assert site_extractor("https://www.youtube.com/watch?v=dQw4w9WgXcQ") == "Youtube"
    assert site_extractor("https://twitter.com/user/status/1234567890") == "Twitter"
    assert site_extractor("https://www.facebook.com/page/videos/1234567890/") == "Facebook"
    assert site_extractor("http://127.0.0.1:8000/watch/x") is None
    reason = "[generic] gone: Unable to download webpage: HTTP Error 410: Gone"
    raw = f"\x1b[0;31mERROR:\x1b[0m {reason} (caused by <HTTPError 410: Gone>)"
    assert clean_reason(raw) == reason


def test_killed_page_download_continues_from_its_part(tmp_path):
    with loopback_site(tmp_path) as srv:
        url = srv.url("/watch/video-tag")
        data = srv.files["/media/a.mp4"]
        part = tmp_path / "videos" / ".staging" / "pages" / f"{video_id_from_url(url)}.mp4.part"
        part.parent.mkdir(parents=True)
        part.write_bytes(data[:6000])  # what a killed run left
        report = run(tmp_path, fvc_csv(tmp_path / "FVC.csv", [("c1", url, "fake")]))
        assert ("/media/a.mp4", "bytes=6000-") in srv.ranges
        assert srv.served["/media/a.mp4"] == len(data) - 6000
    assert report.rows[0]["sha256"] == hashlib.sha256(data).hexdigest()
