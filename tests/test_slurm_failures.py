"""Every SLURM failure noticed and named, on the real test cluster: a cancelled job is seen as ended (no
Ctrl-C), SIGTERM ends the driver, each attempt keeps its log lines, the failure summary names each cause
(out of memory, the exception's last line, sbatch's refusal), and job names carry fvc's prefix with the rule
and wildcards in the comment."""

from __future__ import annotations

import importlib
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from slurm_support import (
    failures_cmd,
    failures_env,
    failures_workflow,
    submitted,
    wait_until,
)

from fvc.slurm import plugin_status
from fvc.slurm.causes import failure_cause
from fvc.slurm.summary import failed_jobs

# The status interval here: the profile's first check after 2 s, then every 12, 22, ... s (+10 s each).
ENDED_WITHIN_S = 90


@dataclass
class Finished:
    workdir: Path
    log: str
    returncode: int


def start(workdir: Path, *names: str, retries: int = 0) -> tuple[subprocess.Popen, Path]:
    log = workdir / "driver.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            failures_cmd(*names, retries=retries),
            cwd=workdir,
            env=failures_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    return proc, log


def running_job(log: Path, name: str) -> str:
    """The SLURM id of job `name` once squeue shows it running."""

    def running() -> str | None:
        ids = re.findall(rf"submitted with SLURM jobid (\d+) \(log: \S+/rule_job/{name}/", log.read_text())
        if not ids:
            return None
        out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i", "-j", ids[0]], capture_output=True)
        return ids[0] if out.stdout.strip() else None

    return wait_until(running, 120, f"job {name} running")


def stop(proc: subprocess.Popen, log: Path) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for job_id in submitted(log.read_text()):
        subprocess.run(["scancel", job_id], check=False)


@pytest.fixture(scope="module")
def failed_run(slurm_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Finished:
    """One run of an OOM job, a job raising on its first attempt, a bad partition (each retried once)."""
    workdir = failures_workflow(tmp_path_factory.mktemp("failures"))
    result = subprocess.run(
        failures_cmd("oom", "raise", "badpartition", retries=1),
        cwd=workdir,
        env=failures_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=600,
    )
    return Finished(workdir, result.stdout, result.returncode)


def test_the_plugin_is_the_version_the_cancelled_state_patch_was_checked_on() -> None:
    """When this fails the plugin changed: check whether it still compares states exactly (its
    check_active_jobs, `status in fail_stati`), then update or drop fvc.slurm.plugin_status."""
    assert plugin_status.plugin_version() in plugin_status.PATCHED_VERSIONS
    plugin = importlib.import_module(plugin_status.PLUGIN)
    source = Path(plugin.__file__).read_text()
    assert '"CANCELLED",' in source and "elif status in fail_stati:" in source
    assert plugin_status.recognise_cancelled_jobs()
    assert plugin.query_job_status.fvc_base_states
    assert plugin_status.base_state("CANCELLED by 0") == "CANCELLED"
    assert plugin_status.base_state("OUT_OF_MEMORY") == "OUT_OF_MEMORY"


def test_status_checks_wait_at_most_the_configured_interval() -> None:
    """The plugin's own rule (10 s more after every check where nothing finished, up to 180 s: its
    check_active_jobs) is kept under `slurm.max_status_interval_s` by fvc's patch; a later cap replaces it."""
    plugin = importlib.import_module(plugin_status.PLUGIN)
    source = Path(plugin.__file__).read_text()
    assert "self.next_seconds_between_status_checks + 10," in source and "max_sleep_time = 180" in source
    executor = plugin.Executor.__new__(plugin.Executor)  # the real class; its checks need a workflow
    executor._next_seconds_between_status_checks = None
    try:
        assert plugin_status.cap_status_interval(20)
        for grown in (12, 22, 32, 180):  # what the plugin sets after checks where nothing finished
            executor.next_seconds_between_status_checks = grown
            assert executor.next_seconds_between_status_checks == min(grown, 20)
        assert plugin_status.cap_status_interval(5)
        executor.next_seconds_between_status_checks = 180
        assert executor.next_seconds_between_status_checks == 5
    finally:
        plugin.Executor.next_seconds_between_status_checks = plugin.Executor.fvc_uncapped_interval


@pytest.mark.slurm
@pytest.mark.slow
def test_a_cancelled_job_is_seen_as_ended_and_reported(slurm_cluster: str, tmp_path: Path) -> None:
    workdir = failures_workflow(tmp_path / "cancel")
    proc, log = start(workdir, "sleep")
    try:
        job_id = running_job(log, "sleep")
        subprocess.run(["scancel", job_id], check=True)
        state = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id], capture_output=True)
        returncode = proc.wait(timeout=ENDED_WITHIN_S)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"the run still waits on cancelled job {job_id} after {ENDED_WITHIN_S} s:\n{log.read_text()}"
        )
    finally:
        stop(proc, log)
    text = log.read_text()
    assert returncode != 0
    assert f"SLURM-job '{job_id}' failed, SLURM status is: 'CANCELLED'" in text, text[-3000:]
    assert re.search(rf"job \(sleep\) SLURM job {job_id}: cancelled: .*CANCELLED AT", text), text[-3000:]
    print(f"sacct right after scancel: {state.stdout.decode().strip()!r}")


@pytest.mark.slurm
@pytest.mark.slow
def test_sigterm_ends_the_driver_once_its_running_job_is_cancelled(
    slurm_cluster: str, tmp_path: Path
) -> None:
    """Snakemake's SIGTERM stops submitting and exits when the running jobs have ended; a job cancelled
    meanwhile counts as ended (before the patch the driver waited on it forever)."""
    workdir = failures_workflow(tmp_path / "sigterm")
    proc, log = start(workdir, "sleep", "ok")
    try:
        job_id = running_job(log, "sleep")
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "Will exit after finishing" in log.read_text(), 30, "the driver to take SIGTERM")
        subprocess.run(["scancel", job_id], check=True)
        returncode = proc.wait(timeout=ENDED_WITHIN_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the driver did not end within {ENDED_WITHIN_S} s of SIGTERM:\n{log.read_text()}")
    finally:
        stop(proc, log)
    assert returncode != 0


@pytest.mark.slurm
@pytest.mark.slow
def test_each_failure_is_named_by_its_cause(failed_run: Finished) -> None:
    assert failed_run.returncode != 0
    causes = {(job.wildcards, job.cause.category) for job in failed_jobs(failed_run.log, failed_run.workdir)}
    assert causes == {("oom", "out-of-memory"), ("raise", "exception"), ("badpartition", "sbatch-refused")}
    summary = failed_run.log[failed_run.log.index("fvc: failed jobs and their causes") :]
    assert re.search(r"job \(oom\) SLURM job \d+: out-of-memory: .*oom-kill event", summary), summary
    assert re.search(r"job \(raise\) SLURM job \d+: exception: RuntimeError: torch sees no GPU", summary)
    assert (
        "job (badpartition): sbatch-refused: sbatch: error: Batch job submission failed: Invalid partition"
        in (summary)
    )
    assert "--unlock" in summary and "squeue" in summary


@pytest.mark.slurm
@pytest.mark.slow
def test_a_retried_job_keeps_both_attempts_log_lines(failed_run: Finished) -> None:
    first, second = submitted_ids(failed_run, "raise")
    history = (failed_run.workdir / "logs" / "raise.attempts.log").read_text()
    assert re.search(rf"=== fvc attempt 1: SLURM job {first} on \S+, pid \d+", history), history
    assert re.search(rf"=== fvc attempt 2: SLURM job {second} on \S+, pid \d+", history), history
    assert "RuntimeError: torch sees no GPU" in history
    assert history.count("job raise starts") == 2
    # The rule's own log holds the last attempt (Snakemake deletes it before each attempt).
    assert "torch sees no GPU" not in (failed_run.workdir / "logs" / "raise.log").read_text()
    cause = failure_cause(
        "SLURM status is: 'FAILED'", fvc_log=failed_run.workdir / "logs" / "raise.log", slurm_job_id=first
    )
    assert (cause.category, cause.line) == ("exception", "RuntimeError: torch sees no GPU")


def submitted_ids(run: Finished, name: str) -> list[str]:
    """SLURM ids of job `name`'s attempts, in order."""
    return re.findall(rf"submitted with SLURM jobid (\d+) \(log: \S+/rule_job/{name}/", run.log)


@pytest.mark.slurm
@pytest.mark.slow
def test_job_names_carry_the_prefix_and_comments_the_rule_and_wildcards(failed_run: Finished) -> None:
    ids = submitted(failed_run.log)
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,JobName,Comment", "-j", ",".join(ids)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("|") for line in out.splitlines()]
    assert len(rows) == len(ids) and all(name.startswith("fvc_") for _, name, _ in rows), rows
    assert {comment for _, _, comment in rows} == {"rule_job_wildcards_oom", "rule_job_wildcards_raise"}


def test_a_killed_runs_lock_comes_with_what_to_do(tmp_path: Path) -> None:
    """SIGKILL leaves Snakemake's lock; the next run says to check squeue for the killed run's jobs, then
    unlock, before Snakemake refuses."""
    workdir = failures_workflow(tmp_path)
    driver = subprocess.Popen(
        failures_cmd("sleep", profile=None),
        cwd=workdir,
        env=failures_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: (workdir / "logs" / "sleep.log").exists(), 120, "the job to start")
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        driver.kill()
        for proc in psutil.process_iter(["cmdline"]):
            if any(str(workdir / ".snakemake" / "scripts") in arg for arg in proc.info["cmdline"] or []):
                proc.kill()
    rerun = subprocess.run(
        failures_cmd("sleep", profile=None), cwd=workdir, env=failures_env(), capture_output=True, text=True
    )
    assert rerun.returncode != 0 and "LockException" in rerun.stderr + rerun.stdout
    assert "holds another snakemake's locks" in rerun.stderr and "squeue --me" in rerun.stderr
    assert "snakemake --unlock" in rerun.stderr


FIXTURES = (
    Path(__file__).parent / "fixtures" / "slurm_failures"
)  # logs of a run of this workflow on the cluster


def test_causes_are_read_from_real_cluster_logs() -> None:
    failed = failed_jobs((FIXTURES / "snakemake.log").read_text(), FIXTURES)
    causes = [(job.wildcards, job.slurm_job_id, job.cause.category, job.cause.line) for job in failed]
    oom_line = (
        "slurmstepd-vm: error: Detected 1 oom-kill event(s) in StepId=651.0. Some of your processes may have"
        " been killed by the cgroup out-of-memory handler."
    )
    refused = "sbatch: error: Batch job submission failed: Invalid partition name specified"
    assert causes[:4] == [
        ("badpartition", None, "sbatch-refused", refused),
        ("badpartition", None, "sbatch-refused", refused),
        ("raise", "652", "exception", "RuntimeError: torch sees no GPU"),
        ("oom", "651", "out-of-memory", oom_line),
    ]
    # The second OOM attempt's SLURM log is not among the fixtures: its state alone still names the cause.
    assert causes[4][:3] == ("oom", "655", "unknown")


def test_a_cancelled_jobs_log_names_the_cancellation() -> None:
    cause = failure_cause(
        "SLURM-job '634' failed, SLURM status is: 'CANCELLED'. Reason: Unknown.",
        slurm_log=FIXTURES / "slurm_logs" / "rule_job" / "sleep" / "634.log",
    )
    assert cause.category == "cancelled" and "JOB 634 ON vm CANCELLED AT" in cause.line


@pytest.mark.parametrize(
    ("state", "category"),
    [
        ("OUT_OF_MEMORY", "out-of-memory"),
        ("TIMEOUT", "timeout"),
        ("PREEMPTED", "preempted"),
        ("NODE_FAIL", "node-fail"),
        ("CANCELLED", "cancelled"),
    ],
)
def test_the_state_names_the_cause_when_the_logs_are_gone(state: str, category: str) -> None:
    message = f"SLURM-job '1' failed, SLURM status is: '{state}'. Reason: Unknown."
    assert failure_cause(message, slurm_log=FIXTURES / "missing.log") == failure_cause(message)
    assert failure_cause(message).category == category


def test_the_attempt_of_a_slurm_job_is_picked_from_the_history_log() -> None:
    history = FIXTURES / "logs" / "raise.log"
    assert failure_cause("", fvc_log=history, slurm_job_id="652").line == "RuntimeError: torch sees no GPU"
    assert failure_cause("", fvc_log=history, slurm_job_id="654").category == "unknown"
