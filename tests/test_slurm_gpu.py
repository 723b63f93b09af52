"""GPUs as SLURM sees them on the test cluster (GRES `gpu` backed by fake device files): a GPU job gets
CUDA_VISIBLE_DEVICES and fvc counts its GPU and CPUs; the workflow asks for GPUs and CPUs for a GPU model's
jobs only, on the GPU partition; sacct's AllocTRES shows the GPU and the audit reads it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from slurm_support import ROOT, TINY_CONFIG, run_snakemake, submitted, wait_until
from workflow_runner import copy_workflow

from fvc.slurm.sacct import read_sacct

pytestmark = pytest.mark.slurm
GPU_CONFIG = ROOT / "tests" / "slurm" / "gpu_config.yaml"
SBATCH_CALL = re.compile(r"sbatch call: (sbatch .*)")


def test_a_gpu_job_sees_its_gpu_and_cpus(slurm_cluster: str, tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    code = "from fvc.core.devices import job_cpus, slurm_gpus; print('fvc', slurm_gpus(), job_cpus())"
    # This interpreter (the project's venv), not whichever python the job's PATH finds first.
    wrap = f'echo "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"; {sys.executable} -c "{code}"'
    job = subprocess.run(
        ["sbatch", "--parsable", "--wait", "--gpus=1", "--cpus-per-task=2", "--mem=500", "-o", str(out),
         "--wrap", wrap],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert job.returncode == 0, job.stderr + (out.read_text() if out.exists() else "")
    assert out.read_text().splitlines() == ["CUDA_VISIBLE_DEVICES=0", "fvc 1 2"]
    job_id = job.stdout.strip()
    jobs = wait_until(lambda: read_sacct([job_id], settle_s=0) or None, 30, "the job's sacct record")
    assert jobs[job_id].gpus == 1


def sbatch_calls(log: str) -> dict[str, str]:
    """The run's sbatch command lines (snakemake --verbose) by job comment."""
    calls = {}
    for call in SBATCH_CALL.findall(log):
        comment = re.search(r"--comment '?(\w+)", call)[1]
        calls[comment] = call
    return calls


def partition(call: str) -> str:
    return re.search(r" -p '?([\w-]+)", call)[1]


@pytest.mark.slow
def test_workflow_asks_gpus_for_a_gpu_model_only_and_the_audit_sees_them(
    slurm_cluster: str, tmp_path: Path
) -> None:
    workdir = copy_workflow(tmp_path / "gpu", TINY_CONFIG)
    (workdir / "gpu_config.yaml").write_text(GPU_CONFIG.read_text())
    result = run_snakemake(
        workdir, "--verbose", configfiles=("test_config.yaml", "gpu_config.yaml"), timeout=1500
    )
    assert result.returncode == 0, result.stdout[-6000:]
    calls = sbatch_calls(result.stdout)
    train = calls["rule_train_wildcards_naive_cnn_0"]
    assert "--gpus=1" in train and "--cpus-per-task=2" in train and partition(train) == "gpu", train
    assert "--gpus=1" in calls["rule_infer_wildcards_naive_cnn"]
    for rule in ("rule_index", "rule_augment", "rule_folds"):  # demo_data, download, audit: local rules
        assert "--gpus" not in calls[rule] and partition(calls[rule]) == "debug", calls[rule]
    jobs = read_sacct(submitted(result.stdout))
    held = {job.allocation.comment: job.gpus for job in jobs.values()}
    assert held["rule_train_wildcards_naive_cnn_0"] == 1 and held["rule_augment"] == 0
    log = (workdir / "logs" / "train" / "naive_cnn" / "fold0.log").read_text()
    assert "SLURM allocated 1 GPU(s) (CUDA_VISIBLE_DEVICES='0') but torch sees none" in log
    metrics = json.loads((workdir / "results" / "train" / "naive_cnn" / "fold0" / "metrics.json").read_text())
    assert metrics["device"] == "cpu"
    audit = pl.read_csv(workdir / "results" / "audit" / "audit.csv")
    train_rows = audit.filter(pl.col("rule") == "train")
    assert train_rows["gpus"].to_list() == [1, 1]
    assert all("GPU unused" in flag for flag in train_rows["flag"].to_list())
    assert audit.filter(pl.col("rule") == "augment")["gpus"].to_list() == [0]
