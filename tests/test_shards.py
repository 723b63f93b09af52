"""Shard assignment and count of the data stages (fvc.core.shards)."""

from collections import Counter

from fvc.core.config import load_config
from fvc.core.shards import shard_count, shard_of


def test_a_videos_shard_depends_on_its_id_only_and_spreads_evenly():
    ids = [f"video{i:05d}" for i in range(4000)]
    shards = [shard_of(video_id, 4) for video_id in ids]
    assert shards == [shard_of(video_id, 4) for video_id in reversed(ids)][::-1]
    assert all(600 < n < 1400 for n in Counter(shards).values()), Counter(shards)
    assert {shard_of(video_id, 1) for video_id in ids} == {0}


def test_auto_count_follows_the_manifest_rows(tmp_path):
    config = load_config("config.yaml")
    assert shard_count(config) == 1  # the demo's 24 videos
    config["dataset"]["demo"]["enabled"] = False
    manifest = tmp_path / "manifest.csv"
    config["dataset"]["manifest"] = str(manifest)
    config["shards"]["videos_per_shard"] = 10
    assert shard_count(config) == 1  # not made yet
    manifest.write_text("video_id,url,label\n" + "".join(f"v{i},u{i},fake\n" for i in range(25)))
    assert shard_count(config) == 3
    config["shards"]["count"] = 16
    assert shard_count(config) == 16
