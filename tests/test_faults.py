"""Fault injection on a real, tiny filesystem: a full disk during augment is a one-line DiskFullError naming
the folder, loses nothing already written, and the rerun (with space freed) resumes to the same result; a
full disk during download stops the stage at once with the same error."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from augment_runner import augment_in
from http_server import LoopbackServer
from video_factory import make_video

from fvc.clips.augment import CLIP_COLUMNS
from fvc.clips.journal import read_journal
from fvc.core.atomic import DiskFullError
from fvc.core.schema import defaults
from fvc.data.download import download_all


def mount_tmpfs(folder: Path, size: str, remount: bool = False) -> None:
    options = f"remount,size={size}" if remount else f"size={size}"
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True, capture_output=True
    )


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 160 kB tmpfs, unmounted afterwards (6 videos x 3 clips of 8 x 32 x 32 x 3 bytes need ~450 kB).
    Needs root and mount rights; skipped otherwise."""
    folder = tmp_path / "small_fs"
    folder.mkdir()
    try:
        mount_tmpfs(folder, "160k")
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {getattr(exc, 'stderr', b'') or exc}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults_data")
    rows = []
    for i in range(6):
        video_id = f"{'fake' if i % 2 else 'real'}/v{i}.mp4"
        path = make_video(root / "videos" / video_id, 16, size=(48, 40), gop=5)
        rows.append(
            {"video_id": video_id, "path": str(path), "label": i % 2, "group": f"g{i // 2}", "frames": 16}
        )
    pl.DataFrame(rows).write_parquet(root / "index.parquet")
    return root / "index.parquet"


def outputs(workdir: Path) -> dict[str, bytes]:
    out = {"clips.csv": (workdir / "out/clips.csv").read_bytes()}
    for clip in pl.read_csv(workdir / "out/clips.csv")["clip_path"]:
        out[clip] = (workdir / clip).read_bytes()
    return out


def test_full_disk_during_augment_names_the_folder_and_the_rerun_resumes(small_fs, index, tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    total = augment_in(reference, index).clips

    with pytest.raises(DiskFullError) as err:
        augment_in(small_fs, index)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"no space left on the device of {small_fs}/out")
    assert " free; free space and rerun" in message
    kept = len(read_journal(small_fs / "out/clips.partial.csv", CLIP_COLUMNS))
    assert 0 < kept < total  # some clips were made before the disk filled up
    assert not [p.name for p in small_fs.rglob("*.tmp")]  # the failed write left no temp file

    mount_tmpfs(small_fs, "4m", remount=True)
    report = augment_in(small_fs, index)
    assert report.made == total - kept  # resumed: every clip journalled before the failure was kept
    assert outputs(small_fs) == outputs(reference)


@pytest.mark.parametrize("source", ["http", "local"])
def test_full_disk_during_download_stops_with_one_line_instead_of_failing_every_video(
    small_fs, tmp_path, source
):
    """ENOSPC used to be retried and then counted as a failed fetch of every video."""
    data = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    local = tmp_path / "a.mp4"
    local.write_bytes(data)
    with LoopbackServer({"/a.mp4": data}) as srv:
        url = srv.url("/a.mp4") if source == "http" else str(local)
        manifest = tmp_path / "manifest.csv"
        sha = hashlib.sha256(data).hexdigest()
        manifest.write_text(
            f"video_id,url,label,group,sha256,size\nfake/a.mp4,{url},fake,g1,{sha},{len(data)}\n"
        )
        with pytest.raises(DiskFullError) as err:
            download_all(
                manifest,
                small_fs / "videos",
                small_fs / "videos.csv",
                **{**defaults()["download"], "retries": 3, "backoff_s": 0.01},
            )
    message = str(err.value)
    assert (
        message.startswith(f"no space left on the device of {small_fs}/videos/fake") and "\n" not in message
    )
    assert srv.requests["/a.mp4"] == (1 if source == "http" else 0)  # not retried
