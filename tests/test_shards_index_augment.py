"""Sharded `index` and `augment` (shards.count): the merged outputs are the same bytes for one and for three
shards, and a shard that fails is the only job rerun after the fix, resuming from its own journal."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml
from workflow_runner import ROOT, copy_workflow, snakemake

from fvc.core.shards import shard_of
from fvc.data.index import merge_index

pytestmark = pytest.mark.slow

CLIPS = "results/augment/clips.csv"
INDEX = "results/index/video_index.parquet"
# What the merges write, compared byte for byte (the clip files too).
MERGED = (
    "results/index/video_index.parquet",
    "results/index/video_index.csv",
    "results/index/rejected.csv",
    "results/augment/clips.csv",
    "results/augment/rejected.csv",
)
JOB_HEADER = re.compile(r"^(?:local)?rule (\w+):$")


def workflow_with_shards(dest: Path, count: int) -> Path:
    """The workflow on the tiny test config with `count` shards; index.min_frames rejects the shortest demo
    videos (16-48 frames), so both rejected files have rows."""
    config = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    config["shards"] = {"count": count}
    config["index"] = {"min_frames": 24}
    dest.mkdir(parents=True)
    configfile = dest.parent / f"{dest.name}.yaml"
    configfile.write_text(yaml.safe_dump(config))
    return copy_workflow(dest, configfile)


def run(workdir: Path, target: str, *args: str, ok: bool = True) -> str:
    result = snakemake(workdir, "--profile", "profiles/local", "--retries", "0", target, *args)
    output = result.stdout + result.stderr
    assert (result.returncode == 0) == ok, output[-4000:]
    return output


def planned(workdir: Path, target: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of each job `snakemake -n` plans for `target`."""
    jobs: list[tuple[str, str]] = []
    for line in run(workdir, target, "-n").splitlines():
        header = JOB_HEADER.match(line.strip())
        if header:
            jobs.append((header.group(1), ""))
        elif jobs and line.strip().startswith("wildcards:"):
            jobs[-1] = (jobs[-1][0], line.split(":", 1)[1].strip())
    return jobs


def mtimes(workdir: Path, pattern: str) -> dict[str, int]:
    return {str(p.relative_to(workdir)): p.stat().st_mtime_ns for p in sorted(workdir.glob(pattern))}


def clip_bytes(workdir: Path) -> dict[str, bytes]:
    clips = workdir / "results/augment/clips"
    return {str(p.relative_to(clips)): p.read_bytes() for p in sorted(clips.rglob("*.safetensors"))}


def stale_temp(clip: Path) -> Path:
    """The name of a temporary file a killed writer of `clip` would leave (fvc.core.atomic.create_temp)."""
    return clip.with_name(f".{clip.name}.999.0123abcd.tmp")


@pytest.fixture(scope="module")
def one_shard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """index and augment as one shard each (and their merges)."""
    workdir = workflow_with_shards(tmp_path_factory.mktemp("shards") / "one", 1)
    run(workdir, CLIPS)
    return workdir


@pytest.fixture(scope="module")
def three_shards(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three shards, one of which fails: a stray folder in place of the last clip of its last video. The
    first run (keep-going) finishes the other shards; the second, after the folder is removed, reruns."""
    workdir = workflow_with_shards(tmp_path_factory.mktemp("shards") / "three", 3)
    run(workdir, INDEX)
    indexed = pl.read_parquet(workdir / INDEX)["video_id"].sort().to_list()
    by_shard = {s: [v for v in indexed if shard_of(v, 3) == s] for s in range(3)}
    failing = max(by_shard, key=lambda s: len(by_shard[s]))
    other = next(s for s in range(3) if s != failing and by_shard[s])
    stray = workdir / f"results/augment/clips/{by_shard[failing][-1]}.aug1.safetensors"
    stray.mkdir(parents=True)
    first = run(workdir, CLIPS, ok=False)
    before = {**mtimes(workdir, "results/index/shards/*/*"), **mtimes(workdir, "results/augment/shards/*/*")}
    shutil.rmtree(stray)
    # Stale temporary files of killed writers: the rerun shard removes its own, not another shard's.
    own_temp = stale_temp(stray)
    other_temp = stale_temp(workdir / f"results/augment/clips/{by_shard[other][0]}.aug0.safetensors")
    for temp in (own_temp, other_temp):
        temp.write_bytes(b"partial")
    plan = planned(workdir, CLIPS)
    run(workdir, CLIPS)
    return {
        "workdir": workdir,
        "by_shard": by_shard,
        "failing": failing,
        "first": first,
        "before": before,
        "plan": plan,
        "temps": (own_temp, other_temp),
    }


def test_three_shards_split_the_videos(three_shards: dict) -> None:
    workdir, by_shard = three_shards["workdir"], three_shards["by_shard"]
    assert sum(1 for videos in by_shard.values() if videos) >= 2, by_shard
    for shard, videos in by_shard.items():
        index = pl.read_parquet(workdir / f"results/index/shards/{shard}of3/video_index.parquet")
        assert index["video_id"].to_list() == [v for v in index["video_id"] if shard_of(v, 3) == shard]
        assert sorted(index["video_id"]) == videos
        for stage in ("index", "augment"):
            memory = workdir / f"logs/{stage}/shard{shard}of3.memory.jsonl"
            points = [json.loads(line)["point"] for line in memory.read_text().splitlines()]
            assert points[0] == "start" and points[-1] == "end", (memory, points)


def test_merged_outputs_are_the_same_for_one_and_three_shards(one_shard: Path, three_shards: dict) -> None:
    three = three_shards["workdir"]
    assert len(pl.read_csv(one_shard / "results/index/rejected.csv")) > 0  # the comparison covers rejects
    for name in MERGED:
        assert (one_shard / name).read_bytes() == (three / name).read_bytes(), name
    clips = clip_bytes(one_shard)
    assert clips and clips == clip_bytes(three)
    listed = pl.read_csv(three / CLIPS)["clip_path"].to_list()
    assert sorted(str(Path(p).relative_to("results/augment/clips")) for p in listed) == sorted(clips)


def test_a_failed_shard_is_the_only_job_rerun(three_shards: dict) -> None:
    workdir, failing = three_shards["workdir"], three_shards["failing"]
    assert "Error in rule augment" in three_shards["first"]
    assert three_shards["plan"] == [("augment_shard", f"shard={failing}"), ("augment", "")]
    after = {**mtimes(workdir, "results/index/shards/*/*"), **mtimes(workdir, "results/augment/shards/*/*")}
    kept = {path: t for path, t in three_shards["before"].items() if f"/{failing}of3/" not in path}
    assert kept and {path: after[path] for path in kept} == kept
    assert f"results/augment/shards/{failing}of3/clips.csv" in set(after) - set(three_shards["before"])


def test_the_rerun_shard_resumes_from_its_journal(three_shards: dict) -> None:
    workdir, failing = three_shards["workdir"], three_shards["failing"]
    memory = workdir / f"logs/augment/shard{failing}of3.memory.jsonl"
    start = next(r for r in map(json.loads, memory.read_text().splitlines()) if r["point"] == "start")
    videos = len(three_shards["by_shard"][failing])
    # Every clip (original + 1 augmented) of the videos before the failing one was journalled.
    assert start["resumed_clips"] == 2 * (videos - 1) > 0
    own_temp, other_temp = three_shards["temps"]
    assert not own_temp.exists() and other_temp.exists()


def test_merge_refuses_shards_of_another_videos_table(one_shard: Path, tmp_path: Path) -> None:
    videos = pl.read_csv(one_shard / "results/download/videos.csv")
    extra = videos.head(1).with_columns(pl.lit("not/in_any_shard.mp4").alias("video_id"))
    pl.concat([videos, extra]).write_csv(tmp_path / "videos.csv")
    shard = one_shard / "results/index/shards/0of1"
    with pytest.raises(ValueError, match="no row for 'not/in_any_shard.mp4'"):
        merge_index(
            tmp_path / "videos.csv",
            [str(shard / "video_index.parquet")],
            [str(shard / "rejected.csv")],
            tmp_path / "i.parquet",
            tmp_path / "i.csv",
            tmp_path / "rejected.csv",
        )
