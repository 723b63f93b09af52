"""A workflow job's set-up: its log file, and its end when the snakemake process that started it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
from slurm_support import failures_cmd, failures_env, failures_workflow

from fvc.core.joblog import ATTEMPT_HEADER, SNAKEMAKE_PID_ENV

# Stands in for snakemake: names itself in the environment as the workflow does (rules/common.smk), starts a
# job through a shell (as a conda or container wrapper would), prints the job's pid, and waits.
STARTER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    os.environ[sys.argv[3]] = str(os.getpid())
    wrapper = '"$0" -c "$1" "$2"; echo "job ended: $?"'
    subprocess.Popen(["sh", "-c", wrapper, sys.executable, sys.argv[2], sys.argv[1]])
    time.sleep(600)
    """
)
# The job: logs to argv[1], watches its snakemake, says when it does, and would run for ten minutes.
JOB = textwrap.dedent(
    """
    import logging, os, sys, time
    from fvc.core.joblog import exit_with_snakemake, log_to
    log_to(sys.argv[1])
    exit_with_snakemake(poll_s=0.1)
    logging.info("watching from pid %d", os.getpid())
    time.sleep(600)
    """
)


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.1)
    return predicate()


def test_log_to_sends_stderr_and_logging_to_the_file(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    code = "import logging, sys; from fvc.core.joblog import log_to; log_to(sys.argv[1]); "
    code += "logging.getLogger('x').info('hello'); print('on stderr', file=sys.stderr)"
    subprocess.run([sys.executable, "-c", code, str(log)], check=True)
    text = log.read_text()
    assert "INFO x: hello" in text and "on stderr" in text


def test_job_ends_when_its_snakemake_is_killed(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    starter = subprocess.Popen([sys.executable, "-c", STARTER, str(log), JOB, SNAKEMAKE_PID_ENV])
    assert wait_until(lambda: log.exists() and "watching from pid" in log.read_text(), timeout=60)
    job = int(log.read_text().split("watching from pid ")[1].split()[0])
    assert running(job)
    os.kill(starter.pid, signal.SIGKILL)
    starter.wait()
    ended = wait_until(lambda: not running(job), timeout=5)
    if not ended:
        os.kill(job, signal.SIGKILL)
    assert ended, "the job outlived the snakemake process that started it"
    assert f"the snakemake process {starter.pid} that started this job has ended" in log.read_text()


def test_job_whose_snakemake_ended_before_it_started_watching_ends_at_once(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    log = tmp_path / "job.log"
    env = {**os.environ, SNAKEMAKE_PID_ENV: str(gone.pid)}
    job = subprocess.run([sys.executable, "-c", JOB, str(log)], env=env, timeout=60)
    assert job.returncode == -signal.SIGTERM
    assert f"the snakemake process {gone.pid} that started this job has ended" in log.read_text()


def test_a_retried_jobs_history_log_keeps_every_attempt(tmp_path: Path) -> None:
    """Snakemake deletes a job's `log:` files before each attempt; the history log beside it keeps both."""
    workdir = failures_workflow(tmp_path)
    result = subprocess.run(
        failures_cmd("raise", profile=None, retries=1),
        cwd=workdir,
        env=failures_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    history = (workdir / "logs" / "raise.attempts.log").read_text()
    headers = list(ATTEMPT_HEADER.finditer(history))
    assert [(h["attempt"], h["job"]) for h in headers] == [("1", None), ("2", None)], history
    first_attempt = history[headers[0].start() : headers[1].start()]
    assert "RuntimeError: torch sees no GPU" in first_attempt and "job raise starts" in first_attempt
    log = (workdir / "logs" / "raise.log").read_text()
    assert log.startswith(headers[1][0]) and "torch sees no GPU" not in log
