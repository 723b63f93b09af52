"""SLURM job arrays (`--slurm-array-jobs=train`): array task ids `<jobid>_<task>` in sacct, the audit,
the retry-by-cause lookup and the failure summary, from records of the real test cluster (plugin 2.8.0), and
the training grid submitted as arrays on that cluster."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
import yaml
from slurm_support import run_snakemake
from workflow_runner import copy_workflow

from fvc.slurm.arrays import by_request
from fvc.slurm.jobs import JobRef, discover_jobs, snakemake_log_jobs
from fvc.slurm.retry import Attempt
from fvc.slurm.rows import sacct_rows
from fvc.slurm.sacct import FIELDS, parse_sacct
from fvc.slurm.summary import failed_jobs

RECORDED = Path(__file__).parent / "fixtures" / "slurm_array"
# The recorded array: rule train over wildcards m, s, f; Snakemake jobs 2, 3, 1, 4 as tasks 1-4 of job 903.
TASKS = {"903_1": "a_1_1", "903_2": "a_2_0", "903_3": "a_1_0", "903_4": "a_2_1"}


def recorded_workdir(tmp_path: Path) -> Path:
    """A workflow folder with the recorded Snakemake log and one task's SLURM log where the plugin puts it."""
    (tmp_path / ".snakemake" / "log").mkdir(parents=True)
    shutil.copy(
        RECORDED / "snakemake.log", tmp_path / ".snakemake" / "log" / "2026-11-29T234337.snakemake.log"
    )
    task_logs = tmp_path / ".snakemake" / "slurm_logs" / "rule_train"
    task_logs.mkdir(parents=True)
    shutil.copy(RECORDED / "903_2.log", task_logs / "903_2.log")
    return tmp_path


def test_sacct_lines_of_array_tasks_are_one_job_each():
    jobs = parse_sacct((RECORDED / "sacct.txt").read_text(), FIELDS)
    assert sorted(jobs) == sorted(TASKS)
    assert jobs["903_1"].state == "COMPLETED" and jobs["903_2"].state == "OUT_OF_MEMORY"
    assert jobs["903_2"].max_rss == 334512 * 1024  # the batch step's, above the python step's 223368K
    assert [s.step for s in jobs["903_2"].steps] == ["", "batch", "0"]
    # Every task carries the comment of the array's first task.
    assert {job.allocation.comment for job in jobs.values()} == {"rule_train_wildcards_a_1_1"}
    attempt = Attempt.from_job(jobs["903_3"])
    assert attempt.job_id == "903_3" and attempt.state == "OUT_OF_MEMORY" and attempt.request.mem_mb == 301


def test_the_snakemake_log_names_each_array_tasks_wildcards():
    refs = snakemake_log_jobs((RECORDED / "snakemake.log").read_text())
    assert refs == {job_id: JobRef(job_id, "train", wildcards) for job_id, wildcards in TASKS.items()}


def test_a_task_log_names_its_own_wildcards(tmp_path):
    work = recorded_workdir(tmp_path)
    (work / ".snakemake" / "log" / "2026-11-29T234337.snakemake.log").unlink()
    # The log starts with the array's first task's command line (a_1_1), then its own job's (a_2_0).
    assert discover_jobs(work) == {"903_2": JobRef("903_2", "train", "a_2_0")}


def test_audit_rows_of_array_tasks_take_their_wildcards_not_the_comment(tmp_path):
    work = recorded_workdir(tmp_path)
    jobs = parse_sacct((RECORDED / "sacct.txt").read_text(), FIELDS)
    rows = {row["job_id"]: row for row in sacct_rows(discover_jobs(work), jobs)}
    assert {job_id: row["wildcards"] for job_id, row in rows.items()} == TASKS
    assert rows["903_2"]["state"] == "OUT_OF_MEMORY" and rows["903_2"]["peak_mem_mb"] == round(
        334512 / 1024, 1
    )
    assert all(row["attempt"] == 1 for row in rows.values())


def test_failure_summary_reads_an_array_tasks_slurm_log(tmp_path):
    work = recorded_workdir(tmp_path)
    report = (
        "Error in rule train:\n"
        "    message: SLURM-job '903_2' failed, SLURM status is: 'FAILED'. Reason: Unknown.\n"
        "    jobid: 3\n"
        f"    log: logs/a/2_0.log, {work}/.snakemake/slurm_logs/rule_train/a_2_0/903_2.log"
        " (check log file(s))\n"
        "    external_jobid: 903_2\n"
    )
    (failed,) = failed_jobs(report, work)
    assert (failed.rule, failed.wildcards, failed.slurm_job_id) == ("train", "a_2_0", "903_2")
    # The state says FAILED; the task's own log (rule_train/903_2.log) shows the OOM kill.
    assert failed.cause.category == "out-of-memory" and "oom-kill" in failed.cause.line


def job(threads: int, **resources) -> SimpleNamespace:
    """What `by_request` reads of a Snakemake job: its threads and resources."""
    return SimpleNamespace(threads=threads, resources=resources, name=str(resources))


def test_an_array_holds_jobs_of_one_request():
    a, b = job(1, mem_mb=1100, runtime=30), job(1, mem_mb=1650, runtime=30)
    c = job(1, mem_mb=1100, runtime=30)
    d = job(2, mem_mb=1100, runtime=30)
    assert by_request([a, b, c, d]) == [[a, c], [b], [d]]


SLURM_GRID = {
    "train": {"models": ["logistic_regression"], "seeds": [1, 2]},
    # Far below its peak: every task of the first array runs out of memory, the retries are sized by cause
    # (a growth big enough that one retry each does: three attempts took this test 833 s on 2 cores).
    "models": {"logistic_regression": {"epochs": 1, "mem_mb": 350}},
    "audit": {"enabled": True},
    "memory_growth": 2.5,
}


@pytest.mark.slurm
@pytest.mark.slow
def test_the_grid_runs_as_arrays_and_an_oom_task_is_retried_by_its_cause(slurm_cluster, tmp_path):
    tiny = yaml.safe_load((Path(__file__).parent / "slurm" / "tiny_config.yaml").read_text())
    tiny["train"].update(SLURM_GRID["train"])
    tiny["models"] = SLURM_GRID["models"]
    tiny["memory_growth"] = SLURM_GRID["memory_growth"]
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(tiny))
    work = copy_workflow(tmp_path / "wf", config)
    done = run_snakemake(work, "--retries", "2", "--slurm-array-jobs=train", timeout=1500)
    assert done.returncode == 0, done.stdout[-6000:]
    arrays = re.findall(
        r"Submitted array job with Snakemake IDs ([\d,]+) and SLURM job ID (\d+)", done.stdout
    )
    assert arrays and sum(len(ids.split(",")) for ids, _ in arrays) >= 4, done.stdout[-4000:]
    # Each retry: the previous attempt is an array task, its cause OUT_OF_MEMORY read from sacct.
    retries = list(csv.DictReader((work / "logs" / "retries.csv").open()))
    first = [r for r in retries if r["attempt"] == "2"]
    assert len(first) == 4, retries
    assert all(re.fullmatch(r"\d+_\d+", r["previous_job"]) for r in first), first
    assert {r["previous_state"] for r in first} == {"OUT_OF_MEMORY"}, first
    assert all(int(r["new_mem_mb"]) > int(r["old_mem_mb"]) for r in first)
    # The audit lists each task of the grid with its own wildcards and peak.
    audit = pl.read_csv(work / "results" / "audit" / "audit.csv", schema_overrides={"job_id": pl.String})
    train = audit.filter(pl.col("rule") == "train")
    tasks = train.filter(pl.col("job_id").str.contains("_"))
    assert tasks.height >= 4 and tasks["peak_mem_mb"].null_count() == 0
    done_rows = train.filter(pl.col("state") == "COMPLETED")
    assert sorted(zip(done_rows["fold"], done_rows["seed"], strict=True)) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    metrics = yaml.safe_load(
        (work / "results" / "infer" / "logistic_regression" / "metrics.json").read_text()
    )
    assert metrics["members"] == 4
