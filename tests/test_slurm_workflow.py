"""The whole workflow on the real test SLURM cluster (`snakemake --profile profiles/slurm`): one capped job
per rule/model/fold, an OOM retried with more memory, interrupted and cancelled runs that resume, and the
same predictions as the local profile."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal
from slurm_support import (
    SUBMITTED,
    TINY_CONFIG,
    Background,
    by_job,
    run_snakemake,
    sacct,
    submitted,
    wait_until,
)
from workflow_runner import copy_workflow

from fvc.core.shards import shard_count

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

PREFIX_RULES = ("demo_data", "download", "index", "augment", "folds")
SHARD_RULES = ("download_shard", "index_shard", "augment_shard")  # wildcard shard; sized by the stage's row
LOCALRULE = re.compile(r"^localrule (\w+):", re.M)
CANCEL_MODEL = "logistic_regression"


@dataclass
class Run:
    workdir: Path
    log: str
    config: dict

    def predictions(self, model: str) -> pl.DataFrame:
        return pl.read_parquet(self.workdir / "results" / "infer" / model / "predictions.parquet")


def merged_config(workdir: Path, *overrides: Path) -> dict:
    """config.yaml with the override files merged in, as Snakemake merges --configfile."""

    def merge(base: dict, extra: dict) -> dict:
        for key, value in extra.items():
            base[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
        return base

    config = yaml.safe_load((workdir / "config.yaml").read_text())
    for path in overrides:
        merge(config, yaml.safe_load(path.read_text()))
    return config


def expected_jobs(config: dict, log: str) -> dict[str, int]:
    """sbatch comment -> first attempt's mem_mb of every job the config implies (local rules left out)."""
    local = set(LOCALRULE.findall(log))
    models, folds = config["train"]["models"], range(config["folds"]["k"])
    jobs = {f"rule_{rule}": config["resources"][rule]["mem_mb"] for rule in PREFIX_RULES if rule not in local}
    jobs |= {
        f"rule_{rule}_wildcards_{shard}": config["resources"][rule.removesuffix("_shard")]["mem_mb"]
        for rule in SHARD_RULES
        if rule not in local
        for shard in range(shard_count(config))
    }
    jobs |= {f"rule_train_wildcards_{m}_{f}": config["models"][m]["mem_mb"] for m in models for f in folds}
    jobs |= {f"rule_infer_wildcards_{m}": config["models"][m]["infer_mem_mb"] for m in models}
    return jobs


def copy_run(run: Run, dest: Path, drop: tuple[str, ...] = ()) -> Path:
    """A copy of a finished run's folder, without the results and logs named in `drop`."""
    shutil.copytree(run.workdir, dest, symlinks=True)
    for name in drop:
        shutil.rmtree(dest / name, ignore_errors=True)
    return dest


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Run:
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm"), TINY_CONFIG)
    result = run_snakemake(workdir, timeout=1500)
    assert result.returncode == 0, result.stdout[-6000:]
    return Run(workdir, result.stdout, merged_config(workdir, TINY_CONFIG))


def test_every_job_ran_once_with_the_memory_its_table_asked_for(slurm_run: Run) -> None:
    expected = expected_jobs(slurm_run.config, slurm_run.log)
    rows = sacct(submitted(slurm_run.log), steps=False)
    assert Counter(r["Comment"] for r in rows) == Counter(expected.keys())
    for row in rows:
        assert row["State"] == "COMPLETED", row
        assert row["ReqMem"] == f"{expected[row['Comment']]}M", row
        assert (row["Account"], row["Partition"]) == ("fvc", "debug")


def test_a_train_job_killed_for_memory_is_retried_with_more(
    slurm_run: Run, slurm_cluster: str, tmp_path: Path
) -> None:
    workdir = copy_run(slurm_run, tmp_path / "oom")
    (workdir / "oom.yaml").write_text(
        yaml.safe_dump({"models": {"naive_cnn": {"mem_mb": 300}}, "memory_growth": 4})
    )
    target = "results/train/naive_cnn/fold0/metrics.json"
    configfiles = ("test_config.yaml", "oom.yaml")
    result = run_snakemake(workdir, target, "--forcerun", target, configfiles=configfiles)
    assert result.returncode == 0, result.stdout[-6000:]
    jobs = by_job(sacct(submitted(result.stdout)))
    first, second = sorted(jobs.values(), key=lambda rows: int(rows[0]["JobID"]))
    assert {first[0]["Comment"], second[0]["Comment"]} == {"rule_train_wildcards_naive_cnn_0"}
    assert (first[0]["ReqMem"], second[0]["ReqMem"]) == ("300M", "1200M")
    if slurm_cluster == "cgroup":
        assert "OUT_OF_MEMORY" in {row["State"] for row in first}, first
    else:
        assert first[0]["State"] != "COMPLETED", first
    assert second[0]["State"] == "COMPLETED"
    assert json.loads((workdir / target).read_text())["model"] == "naive_cnn"


def running_train_job(log: str, model: str) -> tuple[str, int] | None:
    """(SLURM job id, fold) of a running training job of `model` among a run's submissions."""
    ids = submitted(log)
    if not ids:
        return None
    out = subprocess.run(
        ["squeue", "-h", "-t", "RUNNING", "-o", "%i %k", "-j", ",".join(ids)], capture_output=True, text=True
    ).stdout
    for line in out.splitlines():
        job_id, comment = line.split(maxsplit=1)
        if match := re.fullmatch(rf"rule_train_wildcards_{model}_(\d+)", comment.strip()):
            return job_id, int(match[1])
    return None


def checkpointed_epoch(workdir: Path, model: str, fold: int) -> int | None:
    """The epoch of a training job's last checkpoint while it still trains (no metrics yet), else None."""
    folder = workdir / "results" / "train" / model / f"fold{fold}"
    try:
        state = json.loads((folder / "checkpoints" / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return None if (folder / "metrics.json").exists() else state["epoch"]


def metrics_path(comment: str) -> str:
    """The metrics.json a train or infer job (named by its sbatch comment) writes last."""
    rule, wildcards = re.fullmatch(r"rule_(train|infer)_wildcards_(\w+)", comment).groups()
    if rule == "infer":
        return f"results/infer/{wildcards}/metrics.json"
    model, fold = wildcards.rsplit("_", 1)
    return f"results/train/{model}/fold{fold}/metrics.json"


def test_interrupted_and_cancelled_runs_resume_only_unfinished_jobs(slurm_run: Run, tmp_path: Path) -> None:
    drop = ("results/train", "results/models", "results/infer", "logs/train", "logs/infer")
    workdir = copy_run(slurm_run, tmp_path / "resume", drop)
    expected = expected_jobs(slurm_run.config, slurm_run.log)
    model_jobs = {c for c in expected if c.startswith(("rule_train", "rule_infer"))}
    first = Background.start(workdir, tmp_path / "first.log")

    # scancel a training job after its second epoch checkpoint: Snakemake retries it and it resumes.
    def cancellable() -> tuple[str, int, int] | None:
        job = running_train_job(first.text(), CANCEL_MODEL)
        epoch = job and checkpointed_epoch(workdir, CANCEL_MODEL, job[1])
        return (job[0], job[1], epoch) if epoch else None

    job_id, fold, epoch = wait_until(cancellable, 600, f"a running {CANCEL_MODEL} job with a checkpoint", 0.1)
    subprocess.run(["scancel", job_id], check=True)

    # Ctrl-C once a training job finished and others have not.
    def some_trained() -> bool:
        done = Counter(re.findall(r"Finished jobid: \d+ \(Rule: train\)", first.text()))
        return 0 < sum(done.values()) < len([c for c in model_jobs if c.startswith("rule_train")])

    wait_until(some_trained, 600, "a finished training job")
    first.interrupt()
    assert first.wait(180) != 0
    # A job submitted in the same second as the Ctrl-C is not cancelled by the plugin and runs to its end.
    first_rows = {r["JobID"]: r for r in sacct(submitted(first.text()), steps=False, timeout=300)}
    assert first_rows[job_id]["State"].startswith("CANCELLED")
    assert not {r["Comment"] for r in first_rows.values()} - model_jobs, "a finished stage was resubmitted"
    # Jobs the driver saw complete must not run again and jobs without outputs must; a job cancelled while its
    # script was writing outputs (SLURM grants it KillWait seconds) may go either way, and so may one that
    # completed on SLURM after the driver stopped watching (Snakemake redoes a job it did not see finish).
    seen = set(re.findall(r"Finished jobid: (\d+)", first.text()))
    job_of = {slurm_id: job for job, slurm_id in SUBMITTED.findall(first.text())}
    completed = {
        r["Comment"]
        for r in first_rows.values()
        if r["State"] == "COMPLETED" and job_of.get(r["JobID"]) in seen
    }
    missing = {c for c in model_jobs if not (workdir / metrics_path(c)).exists()}
    assert completed and missing

    second = run_snakemake(workdir, timeout=1200)
    assert second.returncode == 0, second.stdout[-6000:]
    second_rows = sacct(submitted(second.stdout), steps=False)
    resubmitted = Counter(r["Comment"] for r in second_rows)
    assert max(resubmitted.values()) == 1 and set(resubmitted) <= model_jobs
    assert missing <= set(resubmitted) and not completed & set(resubmitted)
    assert all(r["State"] == "COMPLETED" for r in second_rows)

    metrics = json.loads((workdir / f"results/train/{CANCEL_MODEL}/fold{fold}/metrics.json").read_text())
    assert metrics["resumed_from_epoch"] is not None and metrics["resumed_from_epoch"] >= epoch
    train_log = (workdir / f"logs/train/{CANCEL_MODEL}/fold{fold}.log").read_text()
    assert f"resuming {CANCEL_MODEL} fold {fold} after epoch {metrics['resumed_from_epoch']}" in train_log
    for model in slurm_run.config["train"]["models"]:
        resumed = Run(workdir, "", slurm_run.config)
        assert_frame_equal(resumed.predictions(model), slurm_run.predictions(model), abs_tol=1e-5)


def test_local_profile_gives_the_same_predictions(slurm_run: Run, tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path / "local", TINY_CONFIG)
    result = run_snakemake(workdir, profile="profiles/local", timeout=1200)
    assert result.returncode == 0, result.stdout[-6000:]
    local = Run(workdir, result.stdout, slurm_run.config)
    for model in slurm_run.config["train"]["models"]:
        assert_frame_equal(local.predictions(model), slurm_run.predictions(model), abs_tol=1e-5)
