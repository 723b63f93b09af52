"""The one atomic-write helper: content lands whole, no temporary file survives, names never collide, the
folder is fsynced, a full disk names the folder; and no module under src/fvc renames files by itself."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fvc.core import atomic
from fvc.core.atomic import (
    DiskFullError,
    atomic_open,
    atomic_path,
    commit,
    human_bytes,
    remove_stale_temps,
    write_bytes,
    write_text,
)
from fvc.core.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_content_lands_and_no_temp_is_left(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    write_text(target, "first\n")
    write_bytes(target, b"second\n")
    with atomic_open(target, "w", newline="") as fh:
        fh.write("third\n")
    assert target.read_text() == "third\n"
    assert os.listdir(target.parent) == ["out.txt"]


def test_an_exception_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer failed"), atomic_open(target) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("writer failed")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
        raise RuntimeError
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_temp_names_are_unique_and_hidden_next_to_the_target(tmp_path):
    target = tmp_path / "out.csv"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        assert re.fullmatch(rf"\.out\.csv\.{os.getpid()}\.[0-9a-f]+\.tmp", first.name)
        assert atomic.TEMP_NAME.fullmatch(first.name)  # so remove_stale_temps finds those a kill leaves
        first.write_text("a")
        second.write_text("b")
    assert target.read_text() == "a"  # the outer block commits last


def test_stale_temps_of_killed_writers_are_removed(tmp_path):
    (tmp_path / "sub").mkdir()
    stale = [tmp_path / ".b.csv.4242.0123abcd.tmp", tmp_path / "sub" / ".a.csv.77.89abcdef.tmp"]
    kept = [tmp_path / "b.csv", tmp_path / ".b.csv.tmp", tmp_path / "notes.tmp", tmp_path / ".x.1.short.tmp"]
    for path in stale + kept:
        path.write_text("x")
    assert remove_stale_temps(tmp_path) == 1 and not stale[0].exists() and stale[1].exists()
    assert remove_stale_temps(tmp_path, recursive=True) == 1 and not stale[1].exists()
    assert all(path.exists() for path in kept)
    assert remove_stale_temps(tmp_path / "missing") == 0


def test_replacing_keeps_the_file_mode(tmp_path):
    target = tmp_path / "config.yaml"
    write_text(target, "a: 1\n")
    mode = os.stat(target).st_mode & 0o777
    assert mode == 0o666 & ~_umask()  # not mkstemp's 0o600
    os.chmod(target, 0o640)
    write_text(target, "a: 2\n")
    assert os.stat(target).st_mode & 0o777 == 0o640


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_file_and_folder_are_fsynced(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    write_text(tmp_path / "a.txt", "x")
    assert synced == ["file", "dir"]
    part = tmp_path / "b.part"
    part.write_text("y")
    commit(part, tmp_path / "b")
    assert synced == ["file", "dir"] * 2
    assert (tmp_path / "b").read_text() == "y" and not part.exists()


def test_enospc_becomes_a_one_line_error_naming_the_folder(tmp_path, monkeypatch):
    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(DiskFullError) as err:
        write_bytes(tmp_path / "clip.safetensors", b"x" * 3 * 2**20)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message
    assert "3.0 MB needed" in message
    number, unit = re.search(r"([\d.]+) (kB|MB|GB) free", message).groups()
    free = float(number) * {"kB": 2**10, "MB": 2**20, "GB": 2**30}[unit]
    assert free == pytest.approx(shutil.disk_usage(tmp_path).free, rel=0.01)
    assert os.listdir(tmp_path) == []


def test_human_bytes():
    assert [human_bytes(n) for n in (512, 25_000, 3 * 2**20, 5 * 2**30)] == [
        "0.5 kB",
        "24.4 kB",
        "3.0 MB",
        "5.0 GB",
    ]


def test_other_os_errors_pass_through(tmp_path, monkeypatch):
    def denied(*args: object) -> None:
        raise PermissionError(errno.EACCES, "denied")

    monkeypatch.setattr(atomic.os, "fsync", denied)
    with pytest.raises(PermissionError):
        write_text(tmp_path / "a", "x")


def test_no_module_renames_files_by_itself():
    """Every rename into place goes through fvc.core.atomic (which fsyncs the file and the folder)."""
    pattern = re.compile(r"\.(replace|rename)\((?![\"'])")  # os.replace(a, b), tmp.replace(path), ...
    offenders = []
    for path in sorted((ROOT / "src" / "fvc").rglob("*.py")):
        if path.name == "atomic.py" and path.parent.name == "core":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


CONCURRENT_APPLY = """
import sys, time
from pathlib import Path
from fvc.slurm.recommend import Recommendation, apply_recommendations
config, go, first = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
while not go.exists():
    time.sleep(0.001)
for value in range(first, first + 40):
    apply_recommendations(config, [Recommendation("models", "vit_gru", "mem_mb", None, value, "lower", "")])
"""


def test_two_concurrent_audit_applies_both_succeed(tmp_path):
    """Two `fvc audit --apply` at once used to race on one fixed temp name (FileNotFoundError)."""
    config = tmp_path / "config.yaml"
    shutil.copy(ROOT / "tests" / "fixtures" / "sacct" / "config.yaml", config)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_APPLY, str(config), str(go), str(first)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for first in (1000, 2000)
    ]
    time.sleep(0.5)
    go.touch()
    errors = [proc.communicate(timeout=300)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], errors
    mem = load_config(config)["models"]["vit_gru"]["mem_mb"]
    assert mem in range(1000, 1040) or mem in range(2000, 2040)
    assert sorted(os.listdir(tmp_path)) == ["config.yaml", "go"]
