"""Helpers of the SLURM tests: the session's test cluster, snakemake runs on the SLURM profile, sacct rows."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SH = ROOT / "tests" / "slurm" / "cluster.sh"
TINY_CONFIG = ROOT / "tests" / "slurm" / "tiny_config.yaml"
BIN = Path(sys.executable).parent
SACCT_FIELDS = (
    "JobID",
    "JobName",
    "State",
    "ExitCode",
    "ReqMem",
    "MaxRSS",
    "Comment",
    "Account",
    "Partition",
    "Submit",
    "Start",
    "End",
)
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")


def cluster(command: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `tests/slurm/cluster.sh COMMAND`, output captured."""
    return subprocess.run([str(CLUSTER_SH), command], capture_output=True, text=True, timeout=timeout)


def memory_mode() -> str:
    """`cgroup` when slurmd caps jobs with cgroups, `poll` when it polls and kills (OverMemoryKill)."""
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    return "cgroup" if re.search(r"^TaskPlugin\s*=.*task/cgroup", out, re.M) else "poll"


@pytest.fixture(scope="session", name="slurm_cluster")
def slurm_cluster_fixture() -> Iterator[str]:
    """The one-node test cluster, started when not running (and then stopped at the end); yields the mode."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("the test SLURM cluster needs root on a Debian machine (tests/slurm/cluster.sh)")
    started = cluster("status").returncode != 0
    if started:
        result = cluster("start")
        assert result.returncode == 0, result.stdout + result.stderr
    yield memory_mode()
    if started:
        cluster("stop")


def slurm_env() -> dict[str, str]:
    """A snakemake run's environment: the venv first on PATH, the test cluster's account and partition."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "FVC_SLURM_ACCOUNT": "fvc",
        "FVC_SLURM_PARTITION": "debug",
    }


def snakemake_cmd(
    *args: str, profile: str = "profiles/slurm", configfiles: tuple[str, ...] = ("test_config.yaml",)
) -> list[str]:
    """The command line of a snakemake run in a workflow copy (targets go in `args`)."""
    return [str(BIN / "snakemake"), *args, "--profile", profile, "--configfile", *configfiles]


def run_snakemake(workdir: Path, *args: str, timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    """Run snakemake to the end; stdout and stderr merged into `.stdout`."""
    return subprocess.run(
        snakemake_cmd(*args, **kwargs),
        cwd=workdir,
        env=slurm_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
    )


@dataclass
class Background:
    """A snakemake run in its own process group (as a shell with job control starts it), logging to a file."""

    proc: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, workdir: Path, log: Path, *args: str, **kwargs) -> Background:
        with log.open("w") as out:
            proc = subprocess.Popen(
                snakemake_cmd(*args, **kwargs),
                cwd=workdir,
                env=slurm_env(),
                text=True,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(proc, log)

    def text(self) -> str:
        return self.log.read_text()

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the whole process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def wait(self, timeout: float = 900) -> int:
        return self.proc.wait(timeout=timeout)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def submitted(text: str) -> list[str]:
    """SLURM job ids of the submissions a run logged (retries included), in order."""
    return [slurm_id for _, slurm_id in SUBMITTED.findall(text)]


def sacct(job_ids: list[str] | set[str], steps: bool = True, timeout: float = 30) -> list[dict[str, str]]:
    """sacct rows of `job_ids` (allocation lines, and their steps when `steps`), once every job has ended
    and its accounting record is final (for ~1 s after a job ends sacct may show placeholders)."""
    if not job_ids:
        return []
    cmd = ["sacct", "-P", "-n", "-j", ",".join(sorted(job_ids)), f"--format={','.join(SACCT_FIELDS)}"]
    if not steps:
        cmd.append("-X")

    def final() -> list[dict[str, str]] | None:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows = [dict(zip(SACCT_FIELDS, line.split("|"), strict=True)) for line in out.splitlines() if line]
        jobs = [r for r in rows if "." not in r["JobID"]]
        done = {
            r["JobID"]
            for r in jobs
            if r["End"] != "Unknown"
            and not r["ReqMem"].endswith("?")
            and r["JobName"] != "allocation"
            and r["State"] not in ("RUNNING", "PENDING")
        }
        return rows if done >= set(job_ids) else None

    return wait_until(final, timeout, f"final sacct records of jobs {sorted(job_ids)}", interval=0.5)


def by_job(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """sacct rows grouped by job: the allocation line first, then its steps."""
    grouped: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        grouped.setdefault(row["JobID"].split(".")[0], []).append(row)
    return grouped


def mb(value: str) -> float:
    """A sacct memory field (`1200M`, `2G`, `177436K`) in MB (MiB as SLURM counts them)."""
    if not value:
        return 0.0
    factor = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}[value[-1]]
    return float(value[:-1]) * factor


# A small workflow whose jobs fail the ways a real run does, with fvc's own pieces: the plugin status patches
# and the failure summary (as the Snakefile applies them) and fvc's job log. Job `sleep` runs until cancelled,
# `oom` outgrows its memory, `raise` raises on its first attempt only, `badpartition` asks for no such
# partition, `ok` succeeds.
FAILURES_SNAKEFILE = """
import sys

from fvc.slurm.plugin_status import cap_status_interval, recognise_cancelled_jobs
from fvc.slurm.summary import failure_summary, stale_lock_hint

recognise_cancelled_jobs()
cap_status_interval(5)
if workflow.is_main_process and (hint := stale_lock_hint()):
    print(hint, file=sys.stderr)
PARTITION = {"badpartition": "nope"}
MEM = {"oom": 250}


rule all:
    input:
        expand("out/{name}.txt", name=config["names"]),


rule job:
    output:
        "out/{name}.txt",
    log:
        "logs/{name}.log",
    resources:
        mem_mb=lambda wc: MEM.get(wc.name, 400),
        runtime=5,
        slurm_partition=lambda wc: PARTITION.get(wc.name, "debug"),
    script:
        "job.py"


onerror:
    print(failure_summary(log), file=sys.stderr)
"""
FAILURES_JOB = """
import logging
import time
from pathlib import Path

from fvc.core.joblog import log_to

log_to(snakemake.log[0])
name = snakemake.wildcards.name
logging.info("job %s starts", name)
if name == "sleep":
    time.sleep(600)
if name == "oom":
    hog = []
    while True:
        hog.append(bytearray(20 * 2**20))
        for i in range(0, len(hog[-1]), 4096):
            hog[-1][i] = 1
if name == "raise":
    marker = Path(snakemake.output[0] + ".failed-once")
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        raise RuntimeError("torch sees no GPU")
Path(snakemake.output[0]).write_text(name)
"""


def failures_workflow(dest: Path) -> Path:
    """`dest` holding the failing workflow (Snakefile, job.py); returns `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "Snakefile").write_text(FAILURES_SNAKEFILE)
    (dest / "job.py").write_text(FAILURES_JOB)
    return dest


def failures_cmd(*names: str, profile: str | None = "profiles/slurm", retries: int = 1) -> list[str]:
    """snakemake on the failing workflow for jobs `names`, on `profile` of this repository (None: local)."""
    where = ["--profile", str(ROOT / profile)] if profile else ["--cores", "1"]
    names_list = f"names=[{','.join(names)}]"
    return [str(BIN / "snakemake"), *where, "--retries", str(retries), "--keep-going", "--config", names_list]


def failures_env() -> dict[str, str]:
    """slurm_env() with this checkout's fvc first on PYTHONPATH (sbatch passes the environment to the job)."""
    env = slurm_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    return env
