"""Several processes per fold (DistributedDataParallel over gloo): each rank's part of a global batch, a
2-process run against a 1-process run of the same global batch, rank 0's checkpoints, per-rank memory marks,
and the same under srun on the test cluster (a resumed 2-task run after a kill)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from slurm_support import ROOT, by_job, sacct, slurm_env, wait_until
from train_fixtures import tiny_spec, write_dataset

from fvc.core.config import ConfigError, model_specs
from fvc.core.memory import MB
from fvc.slurm.sacct import parse_sacct, query
from fvc.train.loader import part_size
from fvc.train.training import train_fold

#: Relative agreement of a 2-process run's losses with a 1-process run whose batch holds both ranks' parts:
#: the same clips per optimizer step, so only the order of float sums differs. (A model with BatchNorm, such
#: as naive_cnn, normalises by each rank's part instead, as plain DDP does: its training loss differed by up
#: to 8.7 % here; SyncBatchNorm takes GPU tensors only: docs/slurm.md, BatchNorm across ranks.)
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path, Path]:
    """15 videos, no augmentation: fold 0 trains on 9 clips, so a global batch of 4 ends with 1 clip (rank
    1's part of it is empty)."""
    root = tmp_path_factory.mktemp("clips")
    clips_csv, folds_csv = write_dataset(root, videos=15, augmentations=0, num_frames=4, size=16)
    return root, clips_csv, folds_csv


def train(dataset, out: Path, spec) -> dict:
    root, clips_csv, folds_csv = dataset
    return train_fold(
        clips_csv,
        folds_csv,
        0,
        spec,
        out / "metrics.json",
        out / "fold0.safetensors",
        out / "checkpoints",
        device="cpu",
        seed=0,
        precision="fp32",
        root=root,
        memory_log=out / "memory.jsonl",
        log=out / "train.log",
    )


def test_rank_parts_cover_each_global_batch_once():
    for size in range(0, 9):
        parts = [part_size(size, rank, 3) for rank in range(3)]
        assert sum(parts) == size and max(parts) - min(parts) <= 1


def test_effective_batch_counts_the_processes():
    row = tiny_spec("naive_cnn", batch_size=2, grad_accum_steps=2, tasks=2).__dict__
    config = {"models": {"naive_cnn": {k: v for k, v in row.items() if k != "name"}}}
    config["train"] = {"models": ["naive_cnn"], "effective_batch": 8}
    assert model_specs(config)["naive_cnn"].effective_batch == 8
    config["train"]["effective_batch"] = 4
    with pytest.raises(ConfigError, match="x 2 processes = 8"):
        model_specs(config)
    config["train"]["effective_batch"] = 8
    config["models"]["naive_cnn"].update(gpus=4, tasks=2)
    with pytest.raises(ConfigError, match="one task per GPU"):
        model_specs(config)


def test_two_processes_train_as_one_with_their_batch(dataset, tmp_path):
    name = "logistic_regression"
    one = train(
        dataset, tmp_path / "one", tiny_spec(name, epochs=2, size=16, batch_size=4, grad_accum_steps=1)
    )
    two = train(
        dataset,
        tmp_path / "two",
        tiny_spec(name, epochs=2, size=16, batch_size=2, grad_accum_steps=1, tasks=2),
    )
    assert two["world_size"] == 2 and one["world_size"] == 1
    for a, b in zip(one["history"], two["history"], strict=True):
        for key in ("train_loss", "val_loss"):
            assert b[key] == pytest.approx(a[key], rel=TOLERANCE), (key, a[key], b[key])
    w1, w2 = (
        load_file(str(tmp_path / "one/fold0.safetensors")),
        load_file(str(tmp_path / "two/fold0.safetensors")),
    )
    for key in w1:
        assert torch.allclose(w1[key].float(), w2[key].float(), atol=1e-3), key
    marks = [json.loads(line) for line in (tmp_path / "two/memory.jsonl").read_text().splitlines()]
    assert {(m["rank"], m["point"]) for m in marks} >= {
        (r, p) for r in (0, 1) for p in ("start", "epoch", "end")
    }
    log = (tmp_path / "two/train.log").read_text()
    assert "rank 0/2" in log and "rank 1/2" in log
    assert json.loads((tmp_path / "two/checkpoints/state.json").read_text())["key"]["world_size"] == 2


def test_a_failing_rank_fails_the_job(dataset, tmp_path):
    spec = tiny_spec("logistic_regression", size=16, batch_size=2, grad_accum_steps=1, tasks=2)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints/state.json").write_text("{not json")
    with pytest.raises(Exception, match="exit code"):
        train(dataset, tmp_path, spec)
    assert os.path.exists(tmp_path / "train.log")


DRIVER = """
import sys
from pathlib import Path
from train_fixtures import tiny_spec
from fvc.train.training import train_fold

root, out, epochs = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
spec = tiny_spec("logistic_regression", epochs=epochs, size=16, batch_size=2, grad_accum_steps=1, tasks=2)
train_fold(root / "clips.csv", root / "folds.csv", 0, spec, out / "metrics.json", out / "fold0.safetensors",
           out / "checkpoints", device="cpu", seed=0, precision="fp32", root=root,
           memory_log=out / "memory.jsonl", log=out / "train.log")
"""


def sbatch_training(dataset, out: Path, epochs: int) -> str:
    """A job shaped as the SLURM plugin submits a 2-task row (sbatch --ntasks=2, the job's script in a
    one-task step); returns its id."""
    root = dataset[0]
    out.mkdir(parents=True, exist_ok=True)
    (out / "driver.py").write_text(DRIVER)
    step = (
        f"srun -n1 --cpu-bind=q --cpus-per-task=1 {sys.executable} {out / 'driver.py'} {root} {out} {epochs}"
    )
    env = {**slurm_env(), "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT / 'tests'}", "OMP_NUM_THREADS": "1"}
    argv = ["sbatch", "--parsable", "-A", "fvc", "-p", "debug", "-J", "fvc-x4-ddp", "--ntasks=2"]
    argv += ["--cpus-per-task=1", "--mem=3000", "-t", "10", "-o", str(out / "slurm.out"), "--wrap", step]
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.slurm
def test_two_tasks_under_srun_train_checkpoint_and_resume(slurm_cluster, dataset, tmp_path):
    # Enough epochs (each a few ms here) that the kill lands before the last: with 3, a quiet cluster's job
    # had checkpointed its last epoch before scancel reached it.
    epochs = 40
    reference = train(
        dataset,
        tmp_path / "one",
        tiny_spec("logistic_regression", epochs=epochs, size=16, batch_size=4, grad_accum_steps=1),
    )
    killed = tmp_path / "killed"
    job = sbatch_training(dataset, killed, epochs=epochs)
    state = killed / "checkpoints/state.json"
    wait_until(state.exists, 300, "the 2-task job's first epoch checkpoint")
    subprocess.run(["scancel", "--signal=KILL", "--full", job], check=True)
    sacct([job])
    first = json.loads(state.read_text())["epoch"]
    print(f"killed after epoch {first} of {epochs}")
    assert first < epochs - 1 and not (killed / "metrics.json").exists()
    resumed = sbatch_training(dataset, killed, epochs=epochs)
    wait_until((killed / "metrics.json").exists, 300, "the resumed 2-task job's metrics")
    rows = by_job(sacct([resumed]))[resumed]
    assert rows[0]["State"] == "COMPLETED", rows
    metrics = json.loads((killed / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["resumed_from_epoch"] == first
    for a, b in zip(reference["history"], metrics["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=TOLERANCE)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=TOLERANCE)
    log = (killed / "train.log").read_text()
    assert "rank 0/2" in log and "rank 1/2" in log
    # the ranks ran as one step of two tasks, beside the script's one-task step
    steps = subprocess.run(
        ["sacct", "-P", "-n", "-j", resumed, "--format=JobID,NTasks"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert f"{resumed}.1|2" in steps, steps
    # The audit's peak of that job (the largest MaxRSS x tasks of any step) as reportseff reads it
    job = parse_sacct(query([resumed]))[resumed]
    theirs = subprocess.run(
        [Path(sys.executable).parent / "reportseff", "--no-color", "--parsable", "--format", "JobID,MemEff",
         resumed],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()[1].split("|")  # fmt: skip
    ours = 100 * job.max_rss / job.req_mem
    print(f"2-task job {resumed}: peak {job.max_rss / MB:.0f} MB, MemEff {ours:.1f}, reportseff {theirs[1]}")
    assert abs(ours - float(theirs[1])) <= 1.0, (ours, theirs)
