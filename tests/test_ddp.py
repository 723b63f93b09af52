"""Several processes per fold (DistributedDataParallel over gloo): each rank's part of a global batch, a
2-process run against a 1-process run of the same global batch, rank 0's checkpoints, per-rank memory marks,
and a 2-task row's train job through Snakemake on the test cluster (killed after an epoch, resumed by a
second snakemake run)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from slurm_support import TINY_CONFIG, Background, by_job, run_snakemake, sacct, submitted, wait_until
from test_time_limit import merged_config
from train_fixtures import tiny_spec, write_dataset
from workflow_runner import copy_workflow

from fvc.core.config import ConfigError, model_specs, validate_config
from fvc.core.memory import MB
from fvc.core.paths import Layout
from fvc.slurm.sacct import parse_sacct, query
from fvc.train.loader import part_size
from fvc.train.stopping import TrainingStopped
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


# A rank that sends itself SIGUSR1 during its Nth training forward pass (rank 1 only), as tests/stop_runner.py
# does for one process; the launcher starts it in place of `python -m fvc.train.rank`.
RANK_STOPPER = """
import os, runpy, signal, sys
from fvc.train import training

forward, calls = training._forward, []

def counted(model, *args):
    if model.training:
        calls.append(1)
        if len(calls) == {nth} and os.environ["RANK"] == "1":
            os.kill(os.getpid(), signal.SIGUSR1)
    return forward(model, *args)

training._forward = counted
assert sys.argv[1:3] == ["-m", "fvc.train.rank"], sys.argv
sys.argv = sys.argv[2:]
runpy.run_module("fvc.train.rank", run_name="__main__")
"""


def test_a_step_checkpoint_keeps_each_ranks_losses(dataset, tmp_path, monkeypatch):
    """Stopped mid-epoch (rank 1 signalled after 2 of the epoch's 3 batches), the ranks resume from a step
    checkpoint that holds every rank's losses so far, so the epoch's loss is one process's."""
    two = tiny_spec("logistic_regression", epochs=2, size=16, batch_size=2, grad_accum_steps=1, tasks=2)
    one = train(dataset, tmp_path / "one", replace(two, tasks=1, batch_size=4))
    (tmp_path / "stopper.py").write_text(RANK_STOPPER.format(nth=2))
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {tmp_path / "stopper.py"} "$@"\n')
    wrapper.chmod(0o755)
    with monkeypatch.context() as patch:
        patch.setattr(sys, "executable", str(wrapper))
        with pytest.raises(TrainingStopped):
            train(dataset, tmp_path / "two", two)
    state = json.loads((tmp_path / "two/checkpoints/state.json").read_text())
    assert (state["epoch"], state["step"]) == (0, 2), state
    resumed = train(dataset, tmp_path / "two", two)
    assert resumed["resumed_from_step"] == 2
    for a, b in zip(one["history"], resumed["history"], strict=True):
        for key in ("train_loss", "val_loss"):
            assert b[key] == pytest.approx(a[key], rel=TOLERANCE), (key, a[key], b[key])


MODEL = "logistic_regression"
#: The 2-task row of the cluster test, merged over tests/slurm/tiny_config.yaml: the dataset fixture's clips,
#: a global batch of 4 in two parts of 2. Enough epochs that the kill lands before the last (with 3, a quiet
#: cluster's job had checkpointed its last epoch before scancel reached it); each took 10-160 ms here.
TWO_TASKS = {
    "train": {"models": [MODEL], "effective_batch": 4},
    "models": {
        MODEL: {"epochs": 50, "size": 16, "batch_size": 2, "grad_accum_steps": 1, "tasks": 2, "mem_mb": 3000}
    },
}
CONFIGFILES = ("test_config.yaml", "two_tasks.yaml")
#: Rank 0's line of a resumed run (fvc.train.training): after an epoch checkpoint, or from a step one.
RESUMED_LINE = re.compile(
    rf"rank 0/2 fvc\.train\.training: (?:resuming {MODEL} fold 0 after epoch (\d+)|"
    rf"{MODEL} fold 0 resumed from epoch (\d+) step \d+)"
)


def workflow_on(dataset, dest: Path) -> tuple[Path, dict]:
    """A copy of the workflow on the SLURM tests' config plus TWO_TASKS, whose augment and folds outputs are
    the dataset fixture's (clip paths relative to the copy); returns the copy and its merged config."""
    root, clips_csv, folds_csv = dataset
    work = copy_workflow(dest, TINY_CONFIG)
    (work / "two_tasks.yaml").write_text(yaml.safe_dump(TWO_TASKS))
    config = validate_config(merged_config(work, *CONFIGFILES))  # defaults filled, as the Snakefile does
    layout = Layout(config["results_dir"])
    shutil.copytree(root / "clips", work / "clips")
    for src, dst in ((clips_csv, layout.augment.clips_csv), (folds_csv, layout.folds.folds_csv)):
        (work / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, work / dst)
    return work, config


def tasks_and_cpus(job: str) -> dict[str, tuple[str, str]]:
    """NTasks and AllocCPUS of each sacct line of `job` (allocation and steps), by JobID."""
    out = subprocess.run(
        ["sacct", "-P", "-n", "-j", job, "--format=JobID,NTasks,AllocCPUS"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {
        jid: (ntasks, cpus) for jid, ntasks, cpus in (line.split("|") for line in out.splitlines() if line)
    }


@pytest.mark.slurm
@pytest.mark.usefixtures("one_thread")
def test_a_two_task_row_trains_through_snakemake_on_slurm_and_resumes_after_a_kill(
    slurm_cluster, dataset, tmp_path
):
    """The user's path: `snakemake --profile profiles/slurm` on the train target of a `tasks: 2` row (the
    plugin's sbatch, Snakemake's job step, our srun of the ranks), SIGKILLed after an epoch checkpoint; a
    second snakemake run resumes and matches one process with the same global batch."""
    work, config = workflow_on(dataset, tmp_path / "wf")
    spec = model_specs(config)[MODEL]
    one = replace(spec, tasks=1, batch_size=spec.batch_size * spec.tasks)
    assert spec.world_size == 2 and spec.effective_batch == one.effective_batch == 4
    layout = Layout(config["results_dir"])
    metrics_path = work / layout.train(MODEL, 0).metrics
    state = metrics_path.parent / "checkpoints" / "state.json"
    # Only the train rule: the fixture's clips and folds stand for the data stages' outputs.
    args = (str(layout.train(MODEL, 0).metrics), "--allowed-rules", "train")
    first = Background.start(work, tmp_path / "first.log", *args, "--retries", "0", configfiles=CONFIGFILES)
    wait_until(state.exists, 300, "the 2-task job's first epoch checkpoint", interval=0.05)
    [killed] = submitted(first.text())
    subprocess.run(["scancel", "--signal=KILL", "--full", killed], check=True)
    assert first.wait(timeout=300) != 0, first.text()[-6000:]
    stopped_after = json.loads(state.read_text())["epoch"]
    print(f"killed after epoch {stopped_after} of {spec.epochs}")
    assert stopped_after < spec.epochs - 1 and not metrics_path.exists()

    second = run_snakemake(work, *args, configfiles=CONFIGFILES, timeout=600)
    assert second.returncode == 0, second.stdout[-6000:]
    [resumed] = submitted(second.stdout)
    jobs = by_job(sacct([killed, resumed]))
    assert jobs[killed][0]["State"] != "COMPLETED" and jobs[resumed][0]["State"] == "COMPLETED", jobs
    for job in (killed, resumed):
        assert jobs[job][0]["Comment"].startswith("rule_train_wildcards"), jobs[job]
        # sbatch --ntasks=2 (one CPU each); the job's snakemake ran as a one-task step, the ranks as a step
        # of two tasks beside it
        lines = tasks_and_cpus(job)
        assert lines[job][1] == str(2 * spec.cpus), lines
        assert lines[f"{job}.0"][0] == "1" and lines[f"{job}.1"][0] == "2", lines

    metrics = json.loads(metrics_path.read_text())
    assert metrics["world_size"] == 2 and metrics["resumed_from_epoch"] == stopped_after
    logs = work / "logs" / "train" / MODEL
    log = (logs / "fold0.log").read_text()
    assert "rank 0/2" in log and "rank 1/2" in log
    # From the epoch checkpoint, or from a step checkpoint: the ranks may get SIGTERM (and write one) when
    # the job's snakemake dies first (fvc.core.joblog.exit_with_snakemake) or srun ends their step
    resumed_line = RESUMED_LINE.search(log)
    assert resumed_line and int(resumed_line[1] or resumed_line[2]) == stopped_after, log
    print(resumed_line[0])
    marks = [json.loads(line) for line in (logs / "fold0.memory.jsonl").read_text().splitlines()]
    assert {(m.get("rank"), m["point"]) for m in marks} >= {(r, p) for r in (0, 1) for p in ("start", "end")}

    reference = train_fold(
        work / layout.augment.clips_csv,
        work / layout.folds.folds_csv,
        0,
        one,
        tmp_path / "one/metrics.json",
        tmp_path / "one/fold0.safetensors",
        tmp_path / "one/checkpoints",
        device="cpu",
        seed=(config["train"]["seeds"] or [config["seed"]])[0],
        precision="fp32",
        root=work,
    )
    assert metrics["train_clips"] == reference["train_clips"]
    for a, b in zip(reference["history"], metrics["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=TOLERANCE)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=TOLERANCE)
    ours_w = load_file(str(work / layout.exports(MODEL).weights(0)))
    for key, value in load_file(str(tmp_path / "one/fold0.safetensors")).items():
        assert torch.allclose(value.float(), ours_w[key].float(), atol=1e-3), key

    # The audit's peak of the resumed job (the largest MaxRSS x tasks of any step) as reportseff reads it
    job = parse_sacct(query([resumed]))[resumed]
    theirs = subprocess.run(
        [Path(sys.executable).parent / "reportseff", "--no-color", "--parsable", "--format", "JobID,MemEff",
         resumed],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()[1].split("|")  # fmt: skip
    ours = 100 * job.max_rss / job.req_mem
    print(f"2-task job {resumed}: peak {job.max_rss / MB:.0f} MB, MemEff {ours:.1f}, reportseff {theirs[1]}")
    assert abs(ours - float(theirs[1])) <= 1.0, (ours, theirs)
