"""Augment: original clips are only resized, augmented clips share one parameter set across their frames,
and clips are byte-identical across processes, orders and kills at any point."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import polars as pl
import pytest
import torch
from augment_runner import augment_in
from video_factory import frame_index, make_video
from workflow_runner import copy_workflow, snakemake

from fvc.clips import augment
from fvc.clips.augment import AugmentError, original_indices
from fvc.clips.journal import Journal
from fvc.clips.store import ClipBatch, read_clip
from fvc.core.seeding import stable_seed
from fvc.data.video import VideoReader, open_video, read_frames

CLI_ARGS = ["--num-frames", "8", "--size", "32", "--num-augmentations", "2", "--seed", "1234"]


def write_index(path: Path, rows: list[dict]) -> Path:
    pl.DataFrame(rows).write_parquet(path)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Six varied real videos (sizes, GOPs, B-frames, nested ids) and one corrupt file, with their index."""
    root = tmp_path_factory.mktemp("augment_data")
    rows = []
    for i in range(6):
        label = i % 2
        video_id = f"{'fake' if label else 'real'}/g{i // 2:02d}/v{i}.mp4"
        frames = 20 + 7 * i
        path = make_video(
            root / "videos" / video_id, frames, size=(48 + 16 * i, 40 + 8 * i), gop=5 + i, bframes=i % 3
        )
        rows.append(
            {
                "video_id": video_id,
                "path": str(path),
                "label": label,
                "group": f"{i // 2:02d}",
                "frames": frames,
            }
        )
    broken = root / "videos" / "real/broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    rows.append({"video_id": "real/broken.mp4", "path": str(broken), "label": 0, "group": "99", "frames": 30})
    return {"root": root, "rows": rows, "index": write_index(root / "index.parquet", rows)}


def run_in(workdir: Path, index: Path) -> augment.AugmentReport:
    """The stage from `workdir`, with its memory log."""
    return augment_in(workdir, index, memory_log="out/memory.jsonl")


def outputs(workdir: Path) -> dict[str, bytes]:
    """clips.csv and every clip file listed in it, by path."""
    out = {"clips.csv": (workdir / "out/clips.csv").read_bytes()}
    for clip in pl.read_csv(workdir / "out/clips.csv")["clip_path"]:
        out[clip] = (workdir / clip).read_bytes()
    return out


@pytest.fixture(scope="module")
def baseline(dataset: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run, in process."""
    workdir = tmp_path_factory.mktemp("baseline")
    report = run_in(workdir, dataset["index"])
    assert report == augment.AugmentReport(clips=18, rejected=1, made=18)
    return workdir


def test_clips_csv_and_original_clips(dataset: dict, baseline: Path) -> None:
    clips = pl.read_csv(baseline / "out/clips.csv", schema_overrides={"group": pl.String, "seed": pl.UInt64})
    assert clips.columns == list(augment.CLIP_COLUMNS)
    good = sorted(r["video_id"] for r in dataset["rows"] if "broken" not in r["video_id"])
    assert clips["original_video"].unique().sort().to_list() == good
    assert clips.select("original_video", "aug_idx").rows() == [(v, a) for v in good for a in range(3)]
    assert clips["clip_path"][0] == f"out/clips/{good[0]}.aug0.safetensors"
    by_id = {r["video_id"]: r for r in dataset["rows"]}
    for row in clips.iter_rows(named=True):
        frames, meta = read_clip(baseline / row["clip_path"])
        assert frames.dtype == np.uint8 and frames.shape == (8, 32, 32, 3)
        video = by_id[row["original_video"]]
        seed = stable_seed(1234, video["video_id"], row["aug_idx"])
        assert meta == {"video_id": video["video_id"], "aug_idx": str(row["aug_idx"]), "seed": str(seed)}
        assert row["seed"] == seed and row["label"] == video["label"] and row["group"] == video["group"]
        if row["aug_idx"] == 0:
            # The original clip: evenly spaced frames, only resized.
            wanted = original_indices(video["frames"], 8)
            assert [frame_index(f) for f in frames] == wanted.tolist()
            assert np.array_equal(frames, read_frames(video["path"], wanted, size=32))
        else:
            original, _ = read_clip(baseline / row["clip_path"].replace(f".aug{row['aug_idx']}.", ".aug0."))
            assert not np.array_equal(frames, original)


def test_rejected_video_is_reported_and_the_stage_goes_on(baseline: Path) -> None:
    rejected = pl.read_csv(baseline / "out/rejected.csv")
    assert rejected.columns == ["video_id", "path", "reason"]
    assert rejected["video_id"].to_list() == ["real/broken.mp4"]
    assert "broken.mp4" in rejected["reason"][0]
    marks = [line for line in (baseline / "out/memory.jsonl").read_text().splitlines() if '"video"' in line]
    assert len(marks) == 7  # one memory mark per video


def test_temporal_sampling() -> None:
    assert original_indices(40, 8).tolist() == [2, 7, 12, 17, 22, 27, 32, 37]
    assert original_indices(3, 8).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    spans = set()
    for seed in range(50):
        idx = augment.jittered_indices(40, 8, np.random.default_rng(seed))
        assert np.all(np.diff(idx) >= 0) and idx.min() >= 0 and idx.max() <= 39
        spans.add((int(idx[0]), int(idx[-1])))
    assert len(spans) > 20  # offsets and jitter vary by seed


def test_same_parameters_on_every_frame() -> None:
    """Identical frames in, identical frames out: crop, flip, colour, blur and JPEG are set per clip."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (1, 48, 64, 3), dtype=np.uint8)
    kinds = set()
    for seed in range(12):
        aug = augment.sample_augmentation(np.random.default_rng(seed))
        kinds |= {aug.flip, aug.blur_sigma is not None, aug.jpeg_quality is not None}
        out = augment.apply_augmentation(np.repeat(frame, 5, axis=0), aug, 32)
        assert out.shape == (5, 32, 32, 3) and out.dtype == np.uint8
        assert all(np.array_equal(out[0], f) for f in out[1:])
    assert kinds == {True, False}


def test_global_rng_untouched(dataset: dict, tmp_path: Path) -> None:
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    threads = torch.get_num_threads()
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    run_in(tmp_path, dataset["index"])
    after = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    assert states[0] == after[0]
    assert all(np.array_equal(a, b) for a, b in zip(states[1][1:], after[1][1:], strict=True))
    assert torch.equal(states[2], after[2])
    assert torch.get_num_threads() == threads and torch.backends.mkldnn.enabled


@pytest.mark.slow
def test_identical_across_processes_hash_seeds_and_order(
    dataset: dict, baseline: Path, tmp_path: Path
) -> None:
    """Another process, another PYTHONHASHSEED, the index in reverse order, another working directory, one
    decoder thread instead of two."""
    reversed_index = write_index(tmp_path / "reversed.parquet", dataset["rows"][::-1])
    workdir = tmp_path / "run"
    workdir.mkdir()
    env = {**os.environ, "PYTHONHASHSEED": "4242", "OMP_NUM_THREADS": "2"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "fvc.cli",
            "augment",
            "--index",
            str(reversed_index),
            "--out-dir",
            "out",
            *CLI_ARGS,
            "--decode-threads",
            "1",
        ],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
    )
    assert outputs(workdir) == outputs(baseline)


def test_frame_counts_come_from_the_stream_not_the_index(
    dataset: dict, baseline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index whose counts are estimates (too high, as a WebM duration can give, or too low) still yields
    the clips of the real counts: no good video rejected for an index past its last frame."""
    rows = [{**row, "frames": row["frames"] + (2 if i % 2 else -3)} for i, row in enumerate(dataset["rows"])]
    readers = []

    def recording_open(path: str, **kwargs: int) -> VideoReader:
        readers.append(open_video(path, **kwargs))
        return readers[-1]

    monkeypatch.setattr(augment, "open_video", recording_open)
    report = run_in(tmp_path, write_index(tmp_path / "estimated.parquet", rows))
    good = sorted(row["path"] for row in dataset["rows"] if "broken" not in row["path"])
    assert sorted(str(r.path) for r in readers) == good  # one reader per video, for all of its clips
    real = {row["path"]: row["frames"] for row in dataset["rows"]}
    assert all(r.frames == real[str(r.path)] for r in readers), "counted from the packets"
    assert report == augment.AugmentReport(clips=18, rejected=1, made=18)
    assert outputs(tmp_path) == outputs(baseline)


def test_each_video_is_opened_once_for_all_of_its_clips(
    dataset: dict, baseline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One `av.open` per video: demuxing its frame table and decoding its three clips share it."""
    opened = []
    real_open = av.open
    monkeypatch.setattr(
        av, "open", lambda target, *a, **k: opened.append(target) or real_open(target, *a, **k)
    )
    run_in(tmp_path, dataset["index"])
    monkeypatch.undo()
    assert sorted(opened) == sorted(row["path"] for row in dataset["rows"])
    assert outputs(tmp_path) == outputs(baseline)


def journal_rows(path: Path) -> int:
    try:
        return max(0, path.read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_killed_at_random_points_resumes_to_identical_result(
    dataset: dict, baseline: Path, tmp_path: Path
) -> None:
    """SIGKILL after 1 journal row, after 7 rows, and after a random delay (maybe still starting up), then
    resume each time: the final result equals the uninterrupted run, byte for byte."""
    command = [
        sys.executable,
        "-m",
        "fvc.cli",
        "augment",
        "--index",
        str(dataset["index"]),
        "--out-dir",
        "out",
        *CLI_ARGS,
    ]
    journal = tmp_path / "out/clips.partial.csv"
    delay = random.Random(7).uniform(0.5, 4.0)
    for rows_before_kill in (1, 7, None):
        proc = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.DEVNULL)
        start = time.monotonic()
        while proc.poll() is None:
            if rows_before_kill is None and time.monotonic() - start > delay:
                break
            if rows_before_kill is not None and journal_rows(journal) >= rows_before_kill:
                break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (tmp_path / "out/clips.csv").exists() or rows_before_kill is None
    run_in(tmp_path, dataset["index"])
    assert outputs(tmp_path) == outputs(baseline)
    assert journal_rows(journal) == 18  # no duplicates, no gaps


def test_rows_are_journalled_after_their_clips_are_durable_one_round_per_video(
    dataset: dict, baseline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each time the journal is fsynced, every row in it names a clip file already fsynced, renamed to its
    path, and whose folder was fsynced after: a crash cannot keep a row without its clip. The durability work
    is batched per video: one fsync per clip file, one per folder and one of the journal."""
    real_fsync, events = os.fsync, []
    journal = (tmp_path / "out/clips.partial.csv").resolve()

    def fsync(fd: int) -> None:
        real_fsync(fd)
        target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        events.append(target)
        if target != journal:
            return
        for row in pl.read_csv(journal)["clip_path"]:
            clip = (tmp_path / row).resolve()
            synced = [
                i
                for i, e in enumerate(events)
                if e.parent == clip.parent and e.name.startswith(f".{clip.name}.")
            ]
            assert clip.is_file() and synced, row
            assert clip.parent in events[synced[-1] :], f"{row}: its folder was not fsynced after it"

    monkeypatch.setattr(os, "fsync", fsync)
    report = run_in(tmp_path, dataset["index"])
    monkeypatch.undo()
    videos = report.made // 3
    assert events.count(journal) == videos  # one append per video (the header went in through a temp file)
    assert len(events) <= 5 * videos + 6  # 3 clips + their folder + the journal per video; 3 CSVs at 2 each
    assert outputs(tmp_path) == outputs(baseline)


def test_torn_journal_and_orphan_clip(dataset: dict, baseline: Path, tmp_path: Path) -> None:
    """A torn last line, a clip file whose row never made it, and half-written temp files (removed)."""
    shutil.copytree(baseline / "out", tmp_path / "out")
    journal = tmp_path / "out/clips.partial.csv"
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:-2]) + lines[-2][: len(lines[-2]) // 2])  # drops 2 rows, tears one
    (tmp_path / "out/clips.csv").unlink()
    temps = [
        tmp_path / "out/clips/real/g00/.v0.mp4.aug1.safetensors.4242.0badc0de.tmp",
        tmp_path / "out/.clips.csv.4242.0badc0de.tmp",
    ]
    for temp in temps:
        temp.write_bytes(b"half")
    report = run_in(tmp_path, dataset["index"])
    assert not any(temp.exists() for temp in temps)
    assert report.made == 2
    assert outputs(tmp_path) == outputs(baseline)
    assert journal.read_text().count("\n") == 19


def test_changed_parameters_redo_the_clips(dataset: dict, baseline: Path, tmp_path: Path) -> None:
    shutil.copytree(baseline / "out", tmp_path / "out")
    report = augment_in(tmp_path, dataset["index"], seed=99)
    assert report.made == 18
    assert set(pl.read_csv(tmp_path / "out/clips.csv")["seed"]) != set(
        pl.read_csv(baseline / "out/clips.csv")["seed"]
    )


def test_bad_index(dataset: dict, tmp_path: Path) -> None:
    row = dict(dataset["rows"][0])
    for video_id, message in (("/abs/v.mp4", "relative POSIX path"), ("a/../b.mp4", r"'\.\.'")):
        index = write_index(tmp_path / "bad.parquet", [{**row, "video_id": video_id}])
        with pytest.raises(AugmentError, match=rf"bad.parquet: row 0: video_id .*{message}"):
            run_in(tmp_path, index)
    index = write_index(tmp_path / "dup.parquet", [row, row])
    with pytest.raises(AugmentError, match="duplicate video_id"):
        run_in(tmp_path, index)
    clash = [{**row, "video_id": "a.mp4"}, {**row, "video_id": "a.mp4.aug0.safetensors/b.mp4"}]
    with pytest.raises(AugmentError, match="would also be a folder"):
        run_in(tmp_path, write_index(tmp_path / "clash.parquet", clash))
    with pytest.raises(AugmentError, match="every one of the 1 videos was rejected"):
        run_in(tmp_path, write_index(tmp_path / "broken.parquet", dataset["rows"][-1:]))


def test_every_video_rejected_counts_the_entries_lost_at_each_stage(dataset: dict, tmp_path: Path) -> None:
    """The error names augment's and the index's rejected.csv and counts what download, index and augment
    lost; a file not present is left out."""
    pl.DataFrame({"video_id": ["a", "b"], "path": ["a", "b"], "reason": ["x", "y"]}).write_csv(
        tmp_path / "index_rejected.csv"
    )
    pl.DataFrame({"video_id": ["c", "d", "e"], "reason": ["z"] * 3}).write_csv(tmp_path / "failed.csv")
    broken = write_index(tmp_path / "broken.parquet", dataset["rows"][-1:])
    with pytest.raises(AugmentError) as caught:
        augment_in(tmp_path, broken, index_rejected="index_rejected.csv", download_failed="failed.csv")
    assert str(caught.value) == (
        f"{broken}: every one of the 1 videos was rejected (reasons in out/rejected.csv); index rejected 2 "
        "more entries (reasons in index_rejected.csv); download failed 3 more entries (reasons in failed.csv)"
    )
    assert pl.read_csv(tmp_path / "out/rejected.csv")["video_id"].to_list() == ["real/broken.mp4"]
    with pytest.raises(AugmentError) as caught:
        augment_in(tmp_path, broken, index_rejected="index_rejected.csv", download_failed="missing.csv")
    assert str(caught.value).endswith("reasons in index_rejected.csv)")


@pytest.mark.slow
def test_rejected_csv_survives_a_failed_workflow_job(dataset: dict, tmp_path: Path) -> None:
    """In the workflow, augment's rejected.csv is a log of the merge: the job that fails because every video
    was rejected keeps it, and its error counts the index's rejects and the download's failures."""
    workdir = copy_workflow(tmp_path / "wf")
    for folder in ("results/index/shards/0of1", "results/download"):
        (workdir / folder).mkdir(parents=True)
    write_index(workdir / "results/index/video_index.parquet", dataset["rows"][-1:])
    write_index(workdir / "results/index/shards/0of1/video_index.parquet", dataset["rows"][-1:])  # one shard
    pl.DataFrame({"video_id": ["a"], "path": ["a"], "reason": ["x"]}).write_csv(
        workdir / "results/index/rejected.csv"
    )
    pl.DataFrame({"video_id": ["c", "d"], "reason": ["z"] * 2}).write_csv(
        workdir / "results/download/failed.csv"
    )
    target = "results/augment/clips.csv"
    rules = ("--allowed-rules", "augment_shard", "augment")
    result = snakemake(workdir, "--profile", "profiles/local", target, *rules)
    assert result.returncode != 0
    rejected = pl.read_csv(workdir / "results/augment/rejected.csv")
    assert rejected["video_id"].to_list() == ["real/broken.mp4"]
    assert (
        "every one of the 1 videos was rejected (reasons in results/augment/rejected.csv); index rejected 1 "
        "more entries (reasons in results/index/rejected.csv); download failed 2 more entries"
    ) in (workdir / "logs/augment/augment.log").read_text()


def test_an_error_of_the_background_durability_work_stops_the_stage(tmp_path: Path) -> None:
    """Clips are made durable and journalled in the background: its error is raised by the next video's
    submit (whose temporary files are removed) or, for the last video, on leaving the block."""
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    with Journal(tmp_path / "journal.csv", ["clip"]) as journal:
        with pytest.raises(KeyError), augment._DurableJournal(journal) as durable:
            first, second = ClipBatch(), ClipBatch()
            first.write(tmp_path / "first.safetensors", frames, {})
            durable.submit(first, [{"not a column": "x"}])  # the journal cannot write this row
            second.write(tmp_path / "second.safetensors", frames, {})
            durable.submit(second, [{"clip": "second"}])
        with pytest.raises(KeyError), augment._DurableJournal(journal) as durable:
            durable.submit(ClipBatch(), [{"not a column": "x"}])
    assert (tmp_path / "first.safetensors").is_file(), "durable before its rows failed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.safetensors", "journal.csv"]
    assert (tmp_path / "journal.csv").read_text() == "clip\n"
