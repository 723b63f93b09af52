"""The download stage against a real loopback HTTP server: resume, verification, failures, archives."""

from __future__ import annotations

import csv
import hashlib
import io
import tarfile

import numpy as np
import pytest
from http_server import LoopbackServer, refused_url

from fvc.core.schema import defaults
from fvc.data.download import DownloadFailed, download_all

CHUNK = 16 * 1024


def payload(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_manifest(path, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["video_id", "url", "label", "group", "sha256", "size"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def row(video_id, url, data=None, label="fake", group="g1", checksum=None):
    return {
        "video_id": video_id,
        "url": url,
        "label": label,
        "group": group,
        "sha256": checksum or (sha(data) if data is not None else ""),
        "size": len(data) if data is not None else "",
    }


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def run(tmp_path, manifest, **kwargs):
    options = {
        **defaults()["download"],
        "chunk_bytes": CHUNK,
        "retries": 2,
        "timeout_s": 5,
        "backoff_s": 0.01,
        "per_site_interval_s": 0,
        "max_failed_fraction": 0,
    }
    options.update(kwargs)
    return download_all(manifest, tmp_path / "videos", tmp_path / "videos.csv", **options)


pytestmark = pytest.mark.usefixtures("in_tmp_path")  # videos.csv paths are relative to the working dir


def test_resume_after_dropped_connection(tmp_path):
    data = payload(150_000, 1)
    with LoopbackServer({"/a.mp4": data}) as srv:
        srv.drop_after("/a.mp4", 40_000)
        manifest = write_manifest(tmp_path / "m.csv", [row("fake/a.mp4", srv.url("/a.mp4"), data)])
        report = run(tmp_path, manifest)
        assert srv.requests["/a.mp4"] == 2
        assert srv.ranges == [("/a.mp4", None), ("/a.mp4", "bytes=40000-")]
        assert srv.served["/a.mp4"] - len(data) <= CHUNK, "bytes fetched twice must stay within one chunk"
    assert (tmp_path / "videos/fake/a.mp4").read_bytes() == data
    assert not (tmp_path / "videos/fake/a.mp4.part").exists()
    assert report.fetched == 1 and not report.failed
    assert read_csv(tmp_path / "videos.csv") == [
        {
            "video_id": "fake/a.mp4",
            "path": "videos/fake/a.mp4",
            "label": "1",
            "group": "g1",
            "sha256": sha(data),
            "size": str(len(data)),
            "url": srv.url("/a.mp4"),
            "extractor": "http",
            "format": "",
            "resolution": "",
            "duration": "",
            "site_id": "",
        }
    ]


def test_server_ignoring_range_restarts_cleanly(tmp_path):
    data = payload(60_000, 2)
    with LoopbackServer({"/a.mp4": data}, ranges_supported=False) as srv:
        srv.drop_after("/a.mp4", 25_000)
        manifest = write_manifest(tmp_path / "m.csv", [row("a.mp4", srv.url("/a.mp4"), data)])
        run(tmp_path, manifest)
        assert srv.requests["/a.mp4"] == 2
    assert (tmp_path / "videos/a.mp4").read_bytes() == data


def test_checksum_mismatch_fails_that_entry_only_and_rerun_skips_verified(tmp_path):
    good1, good2, bad = payload(30_000, 3), payload(20_000, 4), payload(10_000, 5)
    files = {"/good1.mp4": good1, "/good2.mp4": good2, "/bad.mp4": bad}
    with LoopbackServer(files) as srv:
        rows = [
            row("good1.mp4", srv.url("/good1.mp4"), good1),
            row("bad.mp4", srv.url("/bad.mp4"), bad, checksum="0" * 64, label="real", group="g2"),
            row("good2.mp4", srv.url("/good2.mp4"), good2, group="g3"),
        ]
        manifest = write_manifest(tmp_path / "m.csv", rows)
        with pytest.raises(DownloadFailed) as err:
            run(tmp_path, manifest)
        message = str(err.value)
        assert "1 of 3 entries failed" in message
        assert f"bad.mp4 ({srv.url('/bad.mp4')}): sha256 mismatch" in message and "0" * 64 in message
        assert (tmp_path / "videos/good1.mp4").read_bytes() == good1
        assert (tmp_path / "videos/good2.mp4").read_bytes() == good2
        assert not (tmp_path / "videos/bad.mp4").exists() and not (tmp_path / "videos/bad.mp4.part").exists()
        assert not (tmp_path / "videos.csv").exists()
        failed = read_csv(tmp_path / "failed.csv")
        assert [(f["video_id"], f["url"]) for f in failed] == [("bad.mp4", srv.url("/bad.mp4"))]
        assert "sha256 mismatch" in failed[0]["reason"]
        before = dict(srv.requests)

        report = run(tmp_path, manifest, max_failed_fraction=0.5)  # a tolerated failure
        assert srv.requests["/good1.mp4"] == before["/good1.mp4"] == 1, "verified files are not fetched again"
        assert srv.requests["/good2.mp4"] == before["/good2.mp4"] == 1
        assert report.skipped == 2 and report.fetched == 0 and len(report.failed) == 1
    table = read_csv(tmp_path / "videos.csv")
    assert [r["video_id"] for r in table] == ["good1.mp4", "good2.mp4"]
    assert [r["group"] for r in table] == ["g1", "g3"]


def test_size_mismatch_is_atomic(tmp_path):
    data = payload(5_000, 6)
    with LoopbackServer({"/a.mp4": data}) as srv:
        manifest = write_manifest(
            tmp_path / "m.csv", [{**row("a.mp4", srv.url("/a.mp4"), data), "size": 4_000}]
        )
        with pytest.raises(DownloadFailed, match="size mismatch: got 5000 bytes, expected 4000"):
            run(tmp_path, manifest)
    assert list((tmp_path / "videos").iterdir()) == []


def test_404_and_connection_refused_are_clear(tmp_path):
    data = payload(5_000, 7)
    dead = refused_url("/gone.mp4")
    with LoopbackServer({"/ok.mp4": data}) as srv:
        rows = [
            row("missing.mp4", srv.url("/missing.mp4")),
            row("ok.mp4", srv.url("/ok.mp4"), data),
            row("refused.mp4", dead),
        ]
        manifest = write_manifest(tmp_path / "m.csv", rows)
        with pytest.raises(DownloadFailed) as err:
            run(tmp_path, manifest, max_failed_fraction=0.5)
        assert srv.requests["/missing.mp4"] == 1, "a 404 is not retried"
    message = str(err.value)
    assert f"missing.mp4 ({srv.url('/missing.mp4')}): HTTP 404" in message
    assert f"refused.mp4 ({dead}): gave up after 3 attempts: cannot connect" in message
    assert "refused" in message.lower()
    assert (tmp_path / "videos/ok.mp4").read_bytes() == data
    reasons = {f["video_id"]: f["reason"] for f in read_csv(tmp_path / "failed.csv")}
    assert set(reasons) == {"missing.mp4", "refused.mp4"}


def make_tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data, linkname in members:
            info = tarfile.TarInfo(name)
            if linkname is not None:
                info.type, info.linkname = tarfile.SYMTYPE, linkname
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_archive_over_http_fetched_once_and_unsafe_members_refused(tmp_path):
    a, b, evil = payload(40_000, 8), payload(30_000, 9), payload(100, 10)
    archive = make_tar(
        tmp_path / "pack.tar.gz",
        [
            ("x/a.mp4", a, None),
            ("x/b.mp4", b, None),
            ("../evil.mp4", evil, None),
            ("x/link.mp4", None, "/etc/passwd"),
        ],
    ).read_bytes()
    with LoopbackServer({"/pack.tar.gz": archive}) as srv:
        base = srv.url("/pack.tar.gz")
        rows = [
            row("real/a.mp4", f"{base}#x/a.mp4", a, label="real"),
            row("fake/b.mp4", f"{base}#x/b.mp4", b),
            row("fake/evil.mp4", f"{base}#../evil.mp4", evil),
            row("fake/link.mp4", f"{base}#x/link.mp4"),
            row("fake/none.mp4", f"{base}#x/none.mp4"),
        ]
        manifest = write_manifest(tmp_path / "m.csv", rows)
        report = run(tmp_path, manifest, max_failed_fraction=0.6)
        assert srv.requests["/pack.tar.gz"] == 1
        reasons = {e.video_id: reason for e, reason in report.failed}
        assert "escapes the target folder" in reasons["fake/evil.mp4"]
        assert "link to '/etc/passwd'" in reasons["fake/link.mp4"]
        assert "not in the archive" in reasons["fake/none.mp4"]
        assert not (tmp_path / "evil.mp4").exists() and not (tmp_path / "videos/fake/link.mp4").exists()
        assert (tmp_path / "videos/real/a.mp4").read_bytes() == a
        assert (tmp_path / "videos/fake/b.mp4").read_bytes() == b

        write_manifest(manifest, rows[:2])
        report = run(tmp_path, manifest)
        assert srv.requests["/pack.tar.gz"] == 1, "all members verify: the archive is not fetched again"
        assert report.skipped == 2
    assert not (tmp_path / "videos/.staging").exists()
    assert [r["label"] for r in read_csv(tmp_path / "videos.csv")] == ["0", "1"]


def test_local_sources_relative_file_url_and_member_checksum(tmp_path):
    a, b, c = payload(3_000, 11), payload(4_000, 12), payload(5_000, 13)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/a.mp4").write_bytes(a)
    make_tar(tmp_path / "data/pack.tar.gz", [("b.mp4", b, None), ("c.mp4", c, None)])
    rows = [
        row("a.mp4", "a.mp4", a),
        row("b.mp4", (tmp_path / "data/pack.tar.gz").as_uri() + "#b.mp4", b),
        row("c.mp4", "pack.tar.gz#c.mp4", c, checksum="1" * 64),
        row("d.mp4", "absent.mp4"),
    ]
    manifest = write_manifest(tmp_path / "data/m.csv", rows)  # relative urls: relative to the manifest
    report = run(tmp_path, manifest, max_failed_fraction=0.5)
    assert (tmp_path / "videos/a.mp4").read_bytes() == a and (tmp_path / "videos/b.mp4").read_bytes() == b
    reasons = {e.video_id: reason for e, reason in report.failed}
    assert "archive member 'c.mp4': sha256 mismatch" in reasons["c.mp4"]
    assert "cannot read" in reasons["d.mp4"] and "absent.mp4" in reasons["d.mp4"]
    assert not (tmp_path / "videos/c.mp4").exists()
    assert (tmp_path / "data/pack.tar.gz").exists(), "a local archive is read in place, never removed"


def test_corrupt_archive_fails_its_entries_once_each(tmp_path):
    a = payload(50_000, 14)
    whole = make_tar(tmp_path / "pack.tar.gz", [("a.mp4", a, None), ("b.mp4", a, None)]).read_bytes()
    (tmp_path / "pack.tar.gz").write_bytes(whole[: len(whole) // 2])
    manifest = write_manifest(
        tmp_path / "m.csv", [row("a.mp4", "pack.tar.gz#a.mp4", a), row("b.mp4", "pack.tar.gz#b.mp4", a)]
    )
    with pytest.raises(DownloadFailed, match="2 of 2 entries failed"):
        run(tmp_path, manifest)
    failed = read_csv(tmp_path / "failed.csv")
    assert [f["video_id"] for f in failed] == ["a.mp4", "b.mp4"]
    assert all(f["reason"].startswith(f"archive {tmp_path / 'pack.tar.gz'}: ") for f in failed)
    assert not any((tmp_path / "videos").rglob("*.mp4"))
