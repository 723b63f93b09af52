"""The workflow's download -> index -> augment on manifests in the real FVC layout (FVC.csv + FVC_dup.csv,
mixed labels, a repeated URL) pointing at a loopback site of pages, an HLS stream, dead links, a 429, an
HTML page at a .mp4 URL and a stalled server: each dead case gets its reason in failed.csv, the losses are
summed per label and cascade, and every surviving video gets clips."""

from __future__ import annotations

import csv
import json

import polars as pl
import pytest
import yaml
from http_server import StallingServer
from loopback_site import loopback_site
from workflow_runner import ROOT, copy_workflow, snakemake

pytestmark = pytest.mark.slow

TARGET = "results/augment/clips.csv"


def write_fvc(path, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["cascade_id", "video_url", "label"])
        writer.writerows(rows)
    return path


def test_fvc_manifests_through_download_index_augment(tmp_path):
    with loopback_site(tmp_path) as srv, StallingServer() as stall:
        first = write_fvc(
            tmp_path / "FVC.csv",
            [
                ("c1", srv.url("/watch/video-tag"), "fake"),
                ("c2", srv.url("/watch/og-video"), "real"),
                ("c3", srv.url("/hls/index.m3u8"), "debunked"),
                ("c4", srv.url("/watch/removed"), "fake"),
            ],
        )
        dup = write_fvc(
            tmp_path / "FVC_dup.csv",
            [
                ("c1", srv.url("/watch/video-tag"), "fake"),  # the same URL again: one video
                ("c1", srv.url("/media/busy.mp4"), "fake"),
                ("c2", srv.url("/media/direct.mp4"), "real"),
                ("c2", srv.url("/watch/gone"), "real"),
                ("c3", srv.url("/media/login.mp4"), "debunked"),
                ("c4", stall.url("/stalled.mp4"), "fake"),
                ("c5", srv.url("/watch/maybe"), "uncertain"),
                ("c6", srv.url("/watch/joke"), "parody"),
            ],
        )
        config = yaml.safe_load((ROOT / "tests" / "configs" / "tiny.yaml").read_text())
        config["dataset"] = {"demo": {"enabled": False}, "manifest": [str(first), str(dup)]}
        config["download"] = {"timeout_s": 2, "retries": 1, "backoff_s": 0.05, "per_site_interval_s": 0.05}
        (tmp_path / "real.yaml").write_text(yaml.safe_dump(config))
        work = copy_workflow(tmp_path / "wf", tmp_path / "real.yaml")
        result = snakemake(work, "--profile", "profiles/local", TARGET, timeout=600)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        assert srv.requests["/watch/maybe"] == srv.requests["/watch/joke"] == 0, (
            "dropped labels are not fetched"
        )

    download = work / "results" / "download"
    failed = {
        row["url"].rsplit("/", 1)[1]: row["reason"] for row in csv.DictReader(open(download / "failed.csv"))
    }
    assert failed == {
        "removed": "HTTP 404 Not Found",
        "gone": "HTTP 410 Gone",
        "login.mp4": "an HTML page, not a video (Content-Type text/html)",
        "stalled.mp4": "gave up after 2 attempts: TimeoutError: timed out",
    }
    videos = pl.read_csv(download / "videos.csv")
    assert sorted(videos["url"].str.split("/").list.last()) == [
        "busy.mp4", "direct.mp4", "index.m3u8", "og-video", "video-tag",
    ]  # fmt: skip
    assert dict(zip(videos["url"].str.split("/").list.last(), videos["label"], strict=True)) == {
        "video-tag": 1, "busy.mp4": 1, "og-video": 0, "direct.mp4": 0, "index.m3u8": 1,
    }  # fmt: skip
    summary = json.loads((download / "failed_summary.json").read_text())
    assert (summary["entries"], summary["stored"], summary["failed"], summary["repeated_urls"]) == (
        9,
        5,
        4,
        1,
    )
    assert summary["dropped_by_label_map"] == {"uncertain": 1, "parody": 1}
    assert {k: v["failed"] for k, v in summary["by_label"].items()} == {"fake": 2, "real": 1, "debunked": 1}
    assert summary["cascades_lost_entirely"] == ["c4"]

    index = pl.read_csv(work / "results" / "index" / "video_index.csv")
    assert sorted(index["video_id"]) == sorted(videos["video_id"]), "every stored video is readable"
    clips = pl.read_csv(work / "results" / "augment" / "clips.csv")
    assert set(clips["original_video"]) == set(videos["video_id"])
    assert len(clips) == 2 * len(videos)  # the original clip and one augmentation each
