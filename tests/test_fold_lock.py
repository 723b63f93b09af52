"""One training per (model, fold) checkpoint folder: a second process (a rerun's job while the crashed run's
job still trains) refuses at once, naming the holder; once the holder is gone the folder is free again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from train_fixtures import tiny_spec, write_dataset

from fvc.train.fold_lock import LOCK_NAME, FoldBusyError, exclusive_fold
from fvc.train.training import train_fold

# Holds the lock of argv[1] as SLURM job 123 would, says so, and waits to be killed.
HOLDER = textwrap.dedent(
    """
    import sys, time
    from fvc.train.fold_lock import exclusive_fold
    with exclusive_fold(sys.argv[1], "logistic_regression", 0):
        print("held", flush=True)
        time.sleep(600)
    """
)


def hold(checkpoints: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(checkpoints)],
        env={**os.environ, "SLURM_JOB_ID": "123"},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.usefixtures("one_thread")
def test_a_second_training_of_the_same_fold_refuses_naming_the_holder(tmp_path: Path) -> None:
    clips_csv, folds_csv = write_dataset(tmp_path, videos=12, augmentations=0, num_frames=4, size=32)
    spec = tiny_spec("logistic_regression")
    checkpoints = tmp_path / "fold0" / "checkpoints"

    def train() -> dict:
        return train_fold(
            clips_csv,
            folds_csv,
            0,
            spec,
            tmp_path / "fold0" / "metrics.json",
            tmp_path / "fold0.safetensors",
            checkpoints,
            root=tmp_path,
            device="cpu",
            seed=0,
            precision="fp32",
        )

    holder = hold(checkpoints)
    try:
        with pytest.raises(FoldBusyError) as refused:
            train()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    host = socket.gethostname()
    expected = (
        f"models/logistic_regression fold 0 is being trained by SLURM job 123 on {host} (pid {holder.pid}):"
        " wait for it or scancel 123"
    )
    assert str(refused.value) == expected
    assert not (tmp_path / "fold0" / "metrics.json").exists()

    # SIGKILL released the lock with the process: the folder trains, and the lock file names the new holder.
    assert train()["model"] == "logistic_regression"
    with exclusive_fold(checkpoints, "logistic_regression", 0) as lock:
        assert json.loads(lock.read_text()) == {
            "slurm_job": os.environ.get("SLURM_JOB_ID"),
            "host": host,
            "pid": os.getpid(),
        }
    assert (checkpoints / LOCK_NAME).exists()


def test_a_local_holder_is_named_by_its_pid(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"}
    code = HOLDER.replace('"logistic_regression"', '"naive_cnn"')
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(
            FoldBusyError,
            match=rf"fold 0 is being trained by pid {holder.pid} on .*: wait for it or kill {holder.pid}",
        ):
            with exclusive_fold(tmp_path, "naive_cnn", 0):
                pass
    finally:
        holder.kill()
        holder.wait()
