"""The download in shards against a real loopback HTTP server: merged tables the same bytes for any shard
count, the failed share counted over the whole dataset, per-site politeness held across shard processes
running at once (server-side timestamps), and a failed shard rerun alone by the workflow."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from http_server import Answer, LoopbackServer, refused_url
from test_download import payload, row, write_manifest
from workflow_runner import copy_workflow, snakemake

from fvc.core.paths import DownloadFiles
from fvc.core.schema import defaults
from fvc.core.shards import shard_of
from fvc.data.download import DownloadFailed, download_shard, merge_shards

FETCH = {k: v for k, v in defaults()["download"].items() if k != "max_failed_fraction"}
FAST = {**FETCH, "chunk_bytes": 16 * 1024, "retries": 2, "timeout_s": 5, "backoff_s": 0.01}
MERGED = ("videos.csv", "failed.csv", "failed_summary.json")


def ids_in_shard(shard: int, count: int, n: int, prefix: str) -> list[str]:
    """The first `n` video ids `<prefix><i>.mp4` that fall in `shard` of `count`."""
    ids = (f"{prefix}{i}.mp4" for i in range(10_000))
    found = []
    for video_id in ids:
        if shard_of(video_id, count) == shard:
            found.append(video_id)
            if len(found) == n:
                return found
    raise AssertionError("no ids found")


def run_shards(manifest: Path, count: int, max_failed_fraction: float, **options: object) -> None:
    """Every shard of `count` in turn, then the merge, into ./download (paths relative to the cwd)."""
    folder = DownloadFiles(Path("download"))
    shards = [folder.shard(k, count) for k in range(count)]
    for k, files in enumerate(shards):
        download_shard(manifest, folder.videos_dir, files.videos_csv, files.failed_csv, folder.sites_dir,
                       shard=k, count=count, **{**FAST, "per_site_interval_s": 0, **options})  # fmt: skip
    merge_shards(manifest, folder.videos_dir, [(s.videos_csv, s.failed_csv) for s in shards],
                 folder.videos_csv, folder.failed_csv, max_failed_fraction=max_failed_fraction)  # fmt: skip


def test_merged_tables_are_the_same_bytes_for_1_and_3_shards(tmp_path, monkeypatch):
    # Shard 0 of 3 holds both failures (2 of its 4 entries); the whole dataset loses 2 of 11.
    good = ids_in_shard(0, 3, 2, "a") + ids_in_shard(1, 3, 4, "b") + ids_in_shard(2, 3, 3, "c")
    gone, refused = ids_in_shard(0, 3, 2, "dead")
    files = {f"/{video_id}": payload(20_000 + 999 * i, i) for i, video_id in enumerate(good)}
    with LoopbackServer(files) as srv:
        rows = [row(v, srv.url(f"/{v}"), files[f"/{v}"], group=f"g{i % 4}", label=("fake", "real")[i % 2])
                for i, v in enumerate(good)]  # fmt: skip
        rows[4:4] = [row(gone, srv.url("/gone.mp4")), row(refused, refused_url())]
        manifest = write_manifest(tmp_path / "manifest.csv", rows)
        for count in (1, 3):
            (tmp_path / f"n{count}").mkdir()
            monkeypatch.chdir(tmp_path / f"n{count}")
            run_shards(manifest, count, max_failed_fraction=0.2)
        one, three = tmp_path / "n1" / "download", tmp_path / "n3" / "download"
        for name in MERGED:
            assert (one / name).read_bytes() == (three / name).read_bytes(), name
        assert [line.split(",")[0] for line in (one / "videos.csv").read_text().splitlines()[1:]] == good
        assert [line.split(",")[0] for line in (one / "failed.csv").read_text().splitlines()[1:]] == [
            gone,
            refused,
        ]
        with pytest.raises(DownloadFailed, match="2 of 11 entries failed"):
            run_shards(manifest, 3, max_failed_fraction=0.15)


def test_merge_refuses_tables_that_miss_an_entry(tmp_path, monkeypatch):
    files = {f"/v{i}.mp4": payload(5_000, i) for i in range(4)}
    with LoopbackServer(files) as srv:
        manifest = write_manifest(
            tmp_path / "manifest.csv",
            [row(f"clip{i}.mp4", srv.url(path), data) for i, (path, data) in enumerate(files.items())],
        )
        monkeypatch.chdir(tmp_path)
        folder = DownloadFiles(Path("download"))
        shard = folder.shard(0, 2)
        download_shard(manifest, folder.videos_dir, shard.videos_csv, shard.failed_csv, folder.sites_dir,
                       shard=0, count=2, **FAST)  # fmt: skip
    with pytest.raises(Exception, match="do not match the manifest: .* in no shard"):
        merge_shards(manifest, folder.videos_dir, [(shard.videos_csv, shard.failed_csv)], folder.videos_csv,
                     folder.failed_csv, max_failed_fraction=0)  # fmt: skip


SHARD_SCRIPT = """
import json, sys
from fvc.data.download import download_shard
args = json.loads(sys.argv[1])
download_shard(**args)
"""


def start_shard(workdir: Path, manifest: Path, shard: int, count: int, **options: object) -> subprocess.Popen:
    """One shard in its own process (a download_shard job), into `workdir`/download."""
    folder = DownloadFiles(workdir / "download")
    files = folder.shard(shard, count)
    args = {"manifest": str(manifest), "out_dir": str(folder.videos_dir), "table": str(files.videos_csv),
            "failed_csv": str(files.failed_csv), "sites_dir": str(folder.sites_dir), "shard": shard,
            "count": count, **FAST, **options}  # fmt: skip
    return subprocess.Popen([sys.executable, "-c", SHARD_SCRIPT, json.dumps(args)], cwd=workdir)


def wait_for_a_request(srv: LoopbackServer) -> None:
    deadline = time.monotonic() + 60
    while not srv.log and time.monotonic() < deadline:
        time.sleep(0.05)


def test_two_shard_processes_keep_the_per_site_interval_between_any_two_requests(tmp_path):
    interval = 0.4
    ids = ids_in_shard(0, 2, 8, "a") + ids_in_shard(1, 2, 8, "b")
    files = {f"/{video_id}": payload(8_000, i) for i, video_id in enumerate(ids)}
    with LoopbackServer(files) as srv:
        manifest = write_manifest(
            tmp_path / "manifest.csv", [row(v, srv.url(f"/{v}"), files[f"/{v}"]) for v in ids]
        )
        second = start_shard(tmp_path, manifest, 1, 2, workers=3, per_site_interval_s=interval)
        wait_for_a_request(srv)  # then the first starts: the two run at once
        first = start_shard(tmp_path, manifest, 0, 2, workers=3, per_site_interval_s=interval)
        assert [p.wait(timeout=120) for p in (first, second)] == [0, 0]
        log = sorted((t, path) for _, path, t in srv.log)
    assert len(log) == len(ids)
    starts = {shard: [t for t, path in log if path[1] == shard] for shard in "ab"}
    assert min(starts["a"]) < max(starts["b"]), "the two shards' requests overlap in time"
    gaps = [b[0] - a[0] for a, b in zip(log, log[1:], strict=False)]
    # Each process pacing only itself would interleave: some gap would be half the interval or less.
    assert min(gaps) >= interval - 0.1, gaps


def test_a_429_seen_by_one_shard_holds_back_the_other(tmp_path):
    hold, interval = 2.0, 0.25
    busy = ids_in_shard(0, 2, 1, "busy")
    others = ids_in_shard(1, 2, 40, "b")
    files = {f"/{video_id}": payload(4_000, i) for i, video_id in enumerate(busy + others)}
    with LoopbackServer(files) as srv:
        srv.answer(f"/{busy[0]}", Answer(429, b"slow down", {"Retry-After": str(int(hold))}, times=1))
        manifest = write_manifest(
            tmp_path / "manifest.csv", [row(v, srv.url(f"/{v}"), files[f"/{v}"]) for v in busy + others]
        )
        other = start_shard(tmp_path, manifest, 1, 2, workers=1, per_site_interval_s=interval)
        wait_for_a_request(srv)  # the other shard is under way
        first = start_shard(tmp_path, manifest, 0, 2, workers=1, per_site_interval_s=interval)
        assert [p.wait(timeout=120) for p in (first, other)] == [0, 0]
        log = list(srv.log)
    refused = next(t for _, path, t in log if path == f"/{busy[0]}")
    # A request granted before the hold was written (a few ms after the 429) may still arrive: skip 0.15 s.
    after = [t - refused for _, _, t in log if t > refused + 0.15]
    assert max(after) > hold, "the other shard was still at work after the hold"
    assert min(after) >= hold - 0.1, "no request to the site while the Retry-After holds"


def test_a_failed_shard_reruns_alone(tmp_path):
    """The workflow with 3 download shards; one fails (its video's folder is blocked by a file), the rerun
    runs that shard (and the merge) only: the server sees no request for another shard's videos."""
    blocked = ids_in_shard(1, 3, 1, "blocked/")[0]
    ids = [*ids_in_shard(0, 3, 2, "a"), *ids_in_shard(1, 3, 2, "b"), *ids_in_shard(2, 3, 2, "c"), blocked]
    files = {f"/{video_id}": payload(6_000, i) for i, video_id in enumerate(ids)}
    work = copy_workflow(tmp_path / "work")
    with LoopbackServer(files) as srv:
        write_manifest(work / "manifest.csv", [row(v, srv.url(f"/{v}"), files[f"/{v}"]) for v in ids])
        config = yaml.safe_load((work / "test_config.yaml").read_text())
        config["dataset"] = {**config["dataset"], "manifest": "manifest.csv", "demo": {"enabled": False}}
        config["shards"] = {"count": 3}
        config["download"] = {"per_site_interval_s": 0, "retries": 0}
        (work / "test_config.yaml").write_text(yaml.safe_dump(config))
        videos = DownloadFiles(work / "results" / "download").videos_dir
        videos.mkdir(parents=True)
        (videos / "blocked").write_text("a file where the video's folder should be")
        target = "results/download/videos.csv"
        first = snakemake(work, "--cores", "3", "--keep-going", target)
        assert first.returncode != 0
        assert "Error in rule download_shard" in first.stderr, first.stderr
        assert sorted(srv.requests) == sorted(set(files) - {f"/{blocked}"}), "the other shards finished"
        (videos / "blocked").unlink()
        before = dict(srv.requests)
        second = snakemake(work, "--cores", "3", target)
        assert second.returncode == 0, second.stderr
        again = {path: n - before.get(path, 0) for path, n in srv.requests.items() if n > before.get(path, 0)}
    assert again == {f"/{blocked}": 1}, again
    assert re.search(r"^download_shard\s+1$", second.stdout + second.stderr, re.MULTILINE)
    assert len((work / target).read_text().splitlines()) == len(ids) + 1
