"""Step checkpoints: real SIGUSR1/SIGTERM sent to real `fvc train` processes (mid-accumulation, at the end
of an accumulation group, during validation, and from outside at a random moment) stop each at a batch
boundary with a step checkpoint and exit 75; the reruns resume from those steps and end with the same
export bytes and metrics as an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from train_fixtures import ROOT, tiny_spec, write_config, write_dataset

from fvc.train import checkpoint
from fvc.train.stopping import TrainingStopped, hold_stop_signals, stop_signals
from fvc.train.training import train_fold

pytestmark = pytest.mark.usefixtures("one_thread")

RUNNER = ROOT / "tests" / "stop_runner.py"
# Fold 0: 16 training clips in batches of 2 = 8 batches per epoch (accumulation groups of 3, 3 and 2
# batches), 4 validation clips = 2 batches.
SPEC = tiny_spec("x3d", epochs=3, grad_accum_steps=3)
TIMINGS = ("seconds", "train_seconds", "clips_per_s")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("clips")
    clips_csv, folds_csv = write_dataset(root, videos=12, augmentations=1, num_frames=8, size=32)
    return root, clips_csv, folds_csv


def fvc_train_args(dataset, config: Path, out: Path) -> list[str]:
    root, clips_csv, folds_csv = dataset
    return [
        "train",
        *("--config", str(config), "--model", SPEC.name, "--fold", "0", "--seed", "0"),
        *("--precision", "fp32", "--clips", str(clips_csv), "--folds", str(folds_csv), "--root", str(root)),
        *("--out-dir", str(out), "--export-dir", str(out)),
    ]


def start(args: list[str], log: Path, sig: str = "SIGUSR1", mode: str = "none", nth: int = 0, delay_s=0.0):
    """`fvc train ARGS` (stderr to `log`) that signals itself `sig` in its `nth` `mode` forward pass."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, str(RUNNER), sig, mode, str(nth), str(delay_s), *args]
    with log.open("w") as err:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)


def without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in history]


@pytest.mark.slow
def test_stops_at_chosen_and_random_steps_resume_to_the_uninterrupted_result(dataset, tmp_path):
    root, clips_csv, folds_csv = dataset
    reference = tmp_path / "reference"
    expected = train_fold(
        clips_csv,
        folds_csv,
        0,
        SPEC,
        reference / "metrics.json",
        reference / "fold0.safetensors",
        reference / "checkpoints",
        root=root,
        device="cpu",
        seed=0,
        precision="fp32",
    )
    out = tmp_path / "stopped"
    args = fvc_train_args(dataset, write_config(tmp_path / "config.yaml", SPEC), out)
    chosen = [
        # (signal, where, nth forward pass of the process, the stop line, the resume line of the next run)
        ("SIGUSR1", "train", 4, "stopping at epoch 0 step 4 on SIGUSR1: step checkpoint written"),
        ("SIGTERM", "train", 2, "stopping at epoch 0 step 6 on SIGTERM: step checkpoint written"),
        ("SIGTERM", "eval", 1, "stopping at epoch 0 step 8 on SIGTERM: step checkpoint written"),
    ]
    resumed = None
    for attempt, (sig, mode, nth, line) in enumerate(chosen):
        log = tmp_path / f"attempt{attempt}.log"
        assert start(args, log, sig, mode, nth).wait(timeout=300) == TrainingStopped.exit_code, (
            log.read_text()
        )
        text = log.read_text()
        assert line in text and (resumed is None or resumed in text), text
        epoch, step = (int(word) for word in line.split()[3:6:2])
        state = checkpoint.load_state(out / "checkpoints")
        assert (state["epoch"], state["step"]) == (epoch, step)
        resumed = f"resumed from epoch {epoch} step {step}"
        print(f"{line} / next run: {resumed}")

    # From outside, at a random moment while the resumed run trains epoch 1 (8 batches of 50 ms or more).
    log = tmp_path / "random.log"
    proc = start(args, log, delay_s=0.05)
    deadline = time.monotonic() + 120
    while "fold 0 epoch 0: " not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)
    time.sleep(random.uniform(0.0, 0.4))
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=120) == TrainingStopped.exit_code, log.read_text()
    stop_line = next(line for line in log.read_text().splitlines() if "stopping at epoch" in line)
    print(stop_line)

    final = tmp_path / "final.log"
    assert start(args, final).wait(timeout=300) == 0, final.read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert without_timings(metrics["history"]) == without_timings(expected["history"])
    assert (out / "fold0.safetensors").read_bytes() == (reference / "fold0.safetensors").read_bytes()
    assert checkpoint.STEP_GROUP not in checkpoint.load_state(out / "checkpoints")["files"]


def test_stop_signals_record_the_first_signal_and_restore_the_handlers():
    before = signal.getsignal(signal.SIGUSR1)
    with stop_signals() as stops:
        assert not stops.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stops.requested and stops.name == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) == before


def test_a_signal_held_during_start_up_reaches_training_s_handlers():
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        hold_stop_signals()
        # To this thread (the process's other threads, started before, do not block it): it would end the
        # process if it were not held.
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
        with stop_signals() as stops:
            assert stops.name == "SIGUSR1"
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


CHILD = """
import sys, time
from fvc.train.stopping import stop_signals
with stop_signals() as stops:
    print("ready", file=sys.stderr, flush=True)
    while not stops.requested:
        time.sleep(0.01)
print(stops.name, flush=True)
"""
PARENT = f"""
import subprocess, sys
from fvc.train.stopping import forward_stop_signals_to_jobs
forward_stop_signals_to_jobs()
child = subprocess.run([sys.executable, "-c", {CHILD!r}], stdout=subprocess.PIPE, text=True)
print(child.stdout.split()[-1], "parent alive", flush=True)
"""


def test_a_snakemake_passes_the_warning_on_to_its_jobs():
    """As SLURM does, USR1 goes to the parent only (the step's snakemake): its job gets it, it lives on."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert parent.stderr is not None and parent.stderr.readline() == "ready\n"  # the job's handlers are set
    parent.send_signal(signal.SIGUSR1)
    out, _ = parent.communicate(timeout=60)
    assert parent.returncode == 0 and out.split() == ["SIGUSR1", "parent", "alive"], out
