"""The test SLURM cluster and the SLURM profile on a throwaway two-rule workflow: memory caps and retries."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from slurm_support import (
    BIN,
    ROOT,
    by_job,
    cluster,
    sacct,
    slurm_env,
    submitted,
)

PROFILE = str(ROOT / "profiles" / "slurm")
# The workflow's own settings (retries among them) live in its workflow profile, which Snakemake finds beside
# the fvc Snakefile only: the throwaway workflow below names it.
WORKFLOW_PROFILE = str(ROOT / "profiles" / "default")

TOUCH_700_MB = "b = bytearray(700 * 2**20); b[::4096] = bytes(len(b[::4096]))"
SNAKEFILE = textwrap.dedent(
    """
    rule all:
        input: "out/b.txt", "out/hungry.txt"

    rule a:
        output: "out/a.txt"
        resources: mem_mb=500, runtime=5
        shell: "echo a > {output}"

    rule b:
        input: "out/a.txt"
        output: "out/b.txt"
        resources: mem_mb=600, runtime=5
        shell: "cat {input} > {output}; echo b >> {output}"

    # Touches 700 MB: over 500 MB (Snakemake's own ~260 MB included) on attempt 1, under 1000 MB on attempt 2.
    rule hungry:
        output: "out/hungry.txt"
        resources: mem_mb=lambda wildcards, attempt: 500 * attempt, runtime=5
        shell: "python3 -c '{TOUCH_700_MB}'; echo ok > {output}"
    """
).replace("{TOUCH_700_MB}", TOUCH_700_MB)


def sbatch(*args: str) -> str:
    out = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, check=True)
    return out.stdout.strip().split(";")[0]


@pytest.mark.slurm
def test_start_is_idempotent_and_status_names_the_daemons(slurm_cluster: str) -> None:
    result = cluster("start")
    assert result.returncode == 0, result.stderr
    assert f"memory enforcement = {slurm_cluster}" in result.stderr
    status = cluster("status")
    assert status.returncode == 0, status.stdout
    for daemon in ("slurmdbd", "slurmctld", "slurmd"):
        assert f"{daemon}: running" in status.stdout


@pytest.mark.slurm
def test_start_writes_the_configs_when_none_exist(slurm_cluster: str, tmp_path: Path) -> None:
    """A fresh machine has no /etc/slurm/*.conf: `start` must write them, not fail on their digest."""
    confs = [
        Path("/etc/slurm") / name for name in ("slurm.conf", "cgroup.conf", "slurmdbd.conf", "gres.conf")
    ]
    aside = tmp_path / "aside"
    aside.mkdir()
    for conf in confs:
        shutil.copy2(conf, aside / conf.name)
        conf.unlink()
    try:
        result = cluster("start")
        assert result.returncode == 0, result.stderr
        for conf in confs:
            assert conf.is_file() and conf.stat().st_size > 0, f"{conf} not written"
        assert cluster("status").returncode == 0
    finally:
        for saved in aside.iterdir():
            target = Path("/etc/slurm") / saved.name
            if not target.exists():
                shutil.copy2(saved, target)


@pytest.mark.slurm
def test_a_job_over_its_memory_is_killed(slurm_cluster: str) -> None:
    hungry = sbatch("--mem=200M", "--wrap", f"python3 -c '{TOUCH_700_MB}'")
    modest = sbatch("--mem=200M", "--wrap", "echo ok")
    jobs = by_job(sacct({hungry, modest}))
    assert jobs[modest][0]["State"] == "COMPLETED"
    assert jobs[modest][0]["ReqMem"] == "200M"
    states = {row["State"] for row in jobs[hungry]}
    if slurm_cluster == "cgroup":
        assert "OUT_OF_MEMORY" in states, jobs[hungry]
    else:
        assert jobs[hungry][0]["State"] in ("FAILED", "OUT_OF_MEMORY"), jobs[hungry]


@pytest.mark.slurm
def test_profile_caps_jobs_at_mem_mb_and_retries_an_oom_job(slurm_cluster: str, tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    cmd = [str(BIN / "snakemake"), "--profile", PROFILE, "--workflow-profile", WORKFLOW_PROFILE]
    result = subprocess.run(
        cmd,
        cwd=tmp_path,
        env=slurm_env(),
        text=True,
        timeout=600,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert (tmp_path / "out" / "hungry.txt").read_text() == "ok\n"
    jobs = by_job(sacct(set(submitted(result.stdout))))
    allocations = sorted((rows[0] for rows in jobs.values()), key=lambda r: int(r["JobID"]))
    assert [(r["Comment"], r["ReqMem"]) for r in allocations if r["Comment"] != "rule_hungry"] == [
        ("rule_a", "500M"),
        ("rule_b", "600M"),
    ]
    assert all(r["Account"] == "fvc" and r["Partition"] == "debug" for r in allocations)
    first, second = [r for r in allocations if r["Comment"] == "rule_hungry"]
    assert first["ReqMem"] == "500M" and second["ReqMem"] == "1000M"
    first_states = {row["State"] for row in jobs[first["JobID"]]}
    assert ("OUT_OF_MEMORY" in first_states) if slurm_cluster == "cgroup" else first["State"] != "COMPLETED"
    assert second["State"] == "COMPLETED"
    assert list((tmp_path / "logs" / "slurm_efficiency").glob("efficiency_report_*.csv"))
    assert list((tmp_path / ".snakemake" / "slurm_logs" / "rule_a").rglob("*.log")), "successful log not kept"


def test_profile_takes_account_and_partition_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    env = {**slurm_env(), "FVC_SLURM_ACCOUNT": "lab42", "FVC_SLURM_PARTITION": "gpu_short"}
    result = run_dry(tmp_path, env)
    assert "slurm_account=lab42" in result and "slurm_partition=gpu_short" in result
    env = {k: v for k, v in slurm_env().items() if not k.startswith(("FVC_SLURM", "SLURM_"))}
    result = run_dry(tmp_path, env)
    assert "slurm_account=fvc" in result and "slurm_partition=debug" in result


def run_dry(workdir: Path, env: dict[str, str]) -> str:
    cmd = [str(BIN / "snakemake"), "--profile", PROFILE, "-n", "out/a.txt"]
    result = subprocess.run(
        cmd, cwd=workdir, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120
    )
    assert result.returncode == 0, result.stdout
    return result.stdout
