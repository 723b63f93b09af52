"""A SIGKILLed `snakemake` driver: its local jobs end with it (no orphans), and the documented rerun
(`--unlock`, then the same command) completes the workflow."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from workflow_runner import BIN, snakemake

pytestmark = pytest.mark.slow
TARGET = "results/infer/naive_cnn/metrics.json"  # one model's folds and inference: enough to kill and finish


def job_processes(workdir: Path) -> list[psutil.Process]:
    """Running processes of the workflow's `script:` jobs in `workdir` (zombies excluded)."""
    scripts = f"{workdir}/.snakemake/scripts/"
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] != psutil.STATUS_ZOMBIE and any(arg.startswith(scripts) for arg in cmdline):
            found.append(proc)
    return found


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def copy_without_models(finished: Path, dest: Path) -> Path:
    """A copy of a finished run (Snakemake's records included) whose training and later outputs are gone, so
    the next run starts at the training jobs."""
    shutil.copytree(finished, dest, symlinks=True)
    for stage in ("train", "models", "infer", "audit"):
        shutil.rmtree(dest / "results" / stage, ignore_errors=True)
    return dest


def test_killed_driver_leaves_no_orphans_and_the_unlocked_rerun_completes(
    tiny_local_run: Path, tmp_path: Path
) -> None:
    workdir = copy_without_models(tiny_local_run, tmp_path / "workflow")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    cmd = [str(BIN / "snakemake"), "--configfile", "test_config.yaml", "--profile", "profiles/local", TARGET]
    with (tmp_path / "first.log").open("w") as log:
        driver = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        training = wait_for(
            lambda: [p for p in job_processes(workdir) if any("train.py" in a for a in p.info["cmdline"])],
            timeout=900,
            what="a training job",
        )
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        wait_for(lambda: not job_processes(workdir), timeout=10, what="the jobs to end with their driver")
    finally:
        driver.kill()
        for proc in job_processes(workdir):
            proc.kill()
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in training)
    stopped = "that started this job has ended: stopping"
    assert any(stopped in log.read_text() for log in (workdir / "logs" / "train").rglob("*.log"))

    refused = snakemake(workdir, "--profile", "profiles/local", TARGET)
    assert refused.returncode != 0
    assert "--unlock" in refused.stdout + refused.stderr, "Snakemake's stale-lock message names --unlock"
    assert "squeue --me" in refused.stderr, "fvc's hint says to look for the killed run's jobs first"
    assert snakemake(workdir, "--unlock").returncode == 0
    rerun = snakemake(workdir, "--profile", "profiles/local", TARGET)
    assert rerun.returncode == 0, rerun.stdout[-4000:] + rerun.stderr[-4000:]
    again = snakemake(workdir, "--profile", "profiles/local", "-n", TARGET)
    assert "Nothing to be done" in again.stdout + again.stderr
