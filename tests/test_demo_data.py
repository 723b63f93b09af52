"""The demo dataset: real decodable videos, a consistent manifest, byte-identical output for a seed, and a
download of it through the real stage."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from collections import defaultdict

import av
import numpy as np
import pytest

from fvc.core.schema import defaults
from fvc.data.demo import ARCHIVE_NAME, make_demo_dataset, plan_videos, scene_frames
from fvc.data.download import download_all


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    make_demo_dataset(out, videos=8, seed=3, memory_log=out.parent / "demo.memory.jsonl")
    return out


def test_outputs_manifest_and_archive_agree(demo):
    assert sorted(p.name for p in demo.iterdir()) == [ARCHIVE_NAME, "manifest.csv"]
    with open(demo / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and list(rows[0]) == ["video_id", "url", "label", "group", "sha256", "size"]
    labels_of_group = defaultdict(set)
    for row in rows:
        labels_of_group[row["group"]].add(row["label"])
        assert row["url"] == f"{ARCHIVE_NAME}#{row['video_id']}"
    assert all(len(labels) == 1 for labels in labels_of_group.values()), "a group must not span labels"
    assert max(sum(r["group"] == g for r in rows) for g in labels_of_group) >= 2, "near-duplicate re-encodes"
    assert sum(r["label"] == "fake" for r in rows) == 4
    shapes = set()
    with tarfile.open(demo / ARCHIVE_NAME) as tar:
        assert [m.name for m in tar.getmembers()] == [r["video_id"] for r in rows]
        for row in rows:
            data = tar.extractfile(row["video_id"]).read()
            assert hashlib.sha256(data).hexdigest() == row["sha256"] and len(data) == int(row["size"])
            with av.open(tar.extractfile(row["video_id"])) as container:
                stream = container.streams.video[0]
                frames = sum(1 for _ in container.decode(stream))
                shapes.add((stream.width, stream.height))
                assert stream.codec_context.name == "h264" and 16 <= frames <= 48
    assert len(shapes) >= 3, "resolutions vary"
    records = [json.loads(line) for line in (demo.parent / "demo.memory.jsonl").read_text().splitlines()]
    assert [r["point"] for r in records] == ["start"] + ["video"] * 8 + ["end"]


def test_fake_videos_carry_a_flickering_blend():
    """The manipulation is visible in the frames: the face region of a fake flickers over time far more."""
    real, fake = (next(v for v in plan_videos(8, 3) if v.label == label) for label in ("real", "fake"))

    def face_flicker(video):
        frames = np.stack(list(scene_frames(video))).astype(np.float32)
        h, w = frames.shape[1:3]
        centre = frames[:, h // 2 - h // 10 : h // 2 + h // 10, w // 2 - w // 10 : w // 2 + w // 10]
        return float(np.abs(np.diff(centre.mean(axis=(1, 2, 3)))).mean())

    assert face_flicker(fake) > 3 * face_flicker(real)


def test_deterministic_across_processes_and_hash_seeds(tmp_path):
    digests = []
    for run, hash_seed in ((1, "0"), (2, "12345")):
        out = tmp_path / f"run{run}"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "fvc.cli",
                "demo-data",
                "--out-dir",
                str(out),
                "--videos",
                "5",
                "--seed",
                "11",
            ],
            check=True,
            env=env,
            capture_output=True,
        )
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())})
    assert digests[0] == digests[1] and len(digests[0]) == 2


@pytest.mark.usefixtures("in_tmp_path")
def test_demo_downloads_through_the_stage(demo):
    report = download_all(
        demo / "manifest.csv", "videos", "videos.csv", memory_log="dl.memory.jsonl", **defaults()["download"]
    )
    assert report.fetched == 8 and not report.failed
    with open("videos.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert {r["label"] for r in table} == {"0", "1"}
    assert all(os.path.isfile(r["path"]) and not os.path.isabs(r["path"]) for r in table)
    assert not os.path.exists("videos/.staging")
    assert download_all(demo / "manifest.csv", "videos", "videos.csv", **defaults()["download"]).skipped == 8
