"""Retries sized by why the previous attempt failed (fvc.slurm.retry): the decision on sacct rows, the look-up
of the previous attempt among the plugin's logs, and on the real test cluster an OOM, a TIMEOUT and an
exception compared attempt by attempt (sacct ReqMem, Timelimit)."""

from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import textwrap
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from slurm_support import BIN, TINY_CONFIG, by_job, mb, sacct, slurm_env, snakemake_cmd, submitted
from workflow_runner import copy_workflow

from fvc.core.memory import MemoryLog
from fvc.slurm.retry import Attempt, Policy, Request, RetrySizer, decide
from fvc.slurm.sacct import FIELDS, SacctUnavailable, parse_sacct

POLICY = Policy(memory_growth=1.5, runtime_growth=2, max_runtime=5, memory_safety=1.2)
SUBMIT = "2026-11-29T20:00:00"
END = "2026-11-29T20:01:10"


def sacct_text(
    job_id: str, state: str, exit_code: str, req: str, rss: str, limit: str, submit: str = SUBMIT
) -> str:
    """sacct --parsable2 lines (allocation, batch) of one job in FIELDS order."""
    common = {"State": state, "ExitCode": exit_code, "Elapsed": "00:01:10", "TotalCPU": "00:00:50"}
    common |= {"AllocCPUS": "1", "NNodes": "1", "Submit": submit, "Start": submit, "End": END}
    alloc = {"JobID": job_id, "JobIDRaw": job_id, "JobName": "x", "ReqMem": req, "Timelimit": limit}
    alloc["Comment"] = "rule_train_wildcards_naive_cnn_0"
    batch = {"JobID": f"{job_id}.batch", "JobIDRaw": f"{job_id}.batch", "JobName": "batch", "MaxRSS": rss}
    batch["NTasks"] = "1"
    return "\n".join("|".join({**common, **row}.get(field, "") for field in FIELDS) for row in (alloc, batch))


def attempt(
    state: str, exit_code: str = "0:0", req: str = "1000M", rss: str = "500M", limit: str = "00:30:00"
):
    job = parse_sacct(sacct_text("7", state, exit_code, req, rss, limit), FIELDS)["7"]
    previous = Attempt.from_job(job)
    assert previous is not None
    return previous


def test_out_of_memory_grows_memory_by_growth_or_measured_peak_and_keeps_runtime() -> None:
    assert decide(attempt("OUT_OF_MEMORY", "0:125", rss="990M"), POLICY).request == Request(1500, 30)
    peaked = decide(attempt("OUT_OF_MEMORY", "0:125", req="1000M", rss="1400M"), POLICY)
    assert peaked.request == Request(1680, 30) and "peak 1400 MB" in peaked.reason


def test_timeout_grows_runtime_up_to_max_runtime_and_keeps_memory() -> None:
    assert decide(attempt("TIMEOUT", limit="00:01:00"), POLICY).request == Request(1000, 2)
    assert decide(attempt("TIMEOUT", limit="00:04:00"), POLICY).request == Request(1000, 5)
    # Already above the cap (a table row asking more than max_runtime): never shrinks.
    assert decide(attempt("TIMEOUT", limit="00:09:00"), POLICY).request == Request(1000, 9)


@pytest.mark.parametrize("state", ["FAILED", "NODE_FAIL", "PREEMPTED", "CANCELLED by 0", "CANCELLED by 1000"])
def test_failures_that_are_not_the_request_keep_the_same_resources(state: str) -> None:
    decision = decide(attempt(state, "1:0" if state == "FAILED" else "0:15"), POLICY)
    assert decision is not None and decision.request == Request(1000, 30)


def test_a_training_stopped_on_the_time_limit_warning_gets_more_time(tmp_path: Path) -> None:
    """FAILED after the SIGUSR1 warning (a step checkpoint, exit 75) is a TIMEOUT in effect: the sizer reads
    fvc's log of that attempt (its part of the history log, found by the SLURM job id)."""
    warned = decide(replace(attempt("FAILED", "1:0", limit="00:01:00"), warned=True), POLICY)
    assert warned is not None and warned.request == Request(1000, 2) and "time-limit warning" in warned.reason
    plugin_log(tmp_path, "12")
    log = tmp_path / "logs" / "train" / "naive_cnn" / "fold0.log"
    log.parent.mkdir(parents=True)
    header = "=== fvc attempt {}: SLURM job {} on vm, pid 1, snakemake pid 2, 2026-11-29T20:00:00Z ===\n"
    stop = "naive_cnn fold 0 stopping at epoch 0 step 5 on SIGUSR1: step checkpoint written\n"
    fake = FakeSacct(sacct_text("12", "FAILED", "1:0", "1000M", "300M", "00:01:00"))
    since = datetime.fromisoformat(SUBMIT).timestamp()
    for text, runtime in (
        (header.format(1, 12) + stop, 2),
        (header.format(1, 11) + stop + header.format(2, 12), 1),
    ):
        (tmp_path / "logs" / "train" / "naive_cnn" / "fold0.attempts.log").write_text(text)
        sizer = RetrySizer(
            tmp_path, POLICY, since, tmp_path / f"retries{runtime}.csv", sacct=fake, announce=print
        )
        request = sizer.request(
            "train", ["naive_cnn", "0"], 2, Request(1000, 1), log="logs/train/naive_cnn/fold0.log"
        )
        assert request == Request(1000, runtime)


def test_a_failure_by_signal_names_no_cause() -> None:
    assert decide(attempt("FAILED", "0:9"), POLICY) is None


def plugin_log(workdir: Path, job_id: str, rule: str = "train", wildcards: str = "naive_cnn_0") -> None:
    folder = workdir / ".snakemake" / "slurm_logs" / f"rule_{rule}" / wildcards
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{job_id}.log").write_text("")


class FakeSacct:
    """sacct's answer from fixed text (the boundary: this machine may have no SLURM), counting calls."""

    def __init__(self, text: str) -> None:
        self.text, self.calls = text, 0

    def __call__(self, ids, fields):
        self.calls += 1
        return {k: v for k, v in parse_sacct(self.text, fields).items() if k in ids}


def test_the_sizer_reads_the_latest_job_of_this_run_once_and_logs_the_decision(tmp_path: Path) -> None:
    for job_id in ("5", "11", "12"):
        plugin_log(tmp_path, job_id)
    plugin_log(tmp_path, "13", wildcards="naive_cnn_1")  # another fold: not this job's attempt
    since = datetime.fromisoformat(SUBMIT).timestamp()
    fake = FakeSacct(
        "\n".join(
            [
                sacct_text(
                    "5", "TIMEOUT", "0:0", "900M", "100M", "00:10:00", "2026-11-28T10:00:00"
                ),  # older run
                sacct_text("11", "OUT_OF_MEMORY", "0:125", "1000M", "990M", "00:01:00"),
                sacct_text("12", "TIMEOUT", "0:0", "1500M", "600M", "00:01:00"),
                sacct_text("13", "OUT_OF_MEMORY", "0:125", "1000M", "990M", "00:01:00"),
            ]
        )
    )
    lines: list[str] = []
    sizer = RetrySizer(
        tmp_path, POLICY, since, tmp_path / "logs/retries.csv", sacct=fake, announce=lines.append
    )
    first = Request(1000, 1)
    assert sizer.request("train", ["naive_cnn", "0"], 1, first) == first and fake.calls == 0
    assert sizer.request("train", ["naive_cnn", "0"], 3, first) == Request(1500, 2)
    assert sizer.request("train", ["naive_cnn", "0"], 3, first) == Request(1500, 2)  # the runtime callable
    assert fake.calls == 1
    assert lines == [
        "fvc retry: train naive_cnn_0 attempt 3: job 12 TIMEOUT: mem_mb 1500 -> 1500, runtime 1 -> 2 min "
        "(time limit x runtime_growth 2)"
    ]
    with (tmp_path / "logs/retries.csv").open() as rows:
        (row,) = csv.DictReader(rows)
    assert (row["previous_job"], row["old_runtime"], row["new_runtime"], row["new_mem_mb"]) == (
        "12",
        "1",
        "2",
        "1500",
    )


def test_an_oom_retry_rests_on_the_cgroup_peak_the_failed_attempt_recorded(tmp_path: Path) -> None:
    """sacct's MaxRSS of the OOM-killed attempt (1400 MB of 1000 asked: shared pages counted) would ask
    1400 x 1.2; the cgroup peak that attempt's memory log recorded while it ran (990 MB; an earlier
    attempt's larger record and a larger-than-request one not its own cgroup are left out) asks the
    growth's 1500 instead. Without a memory log: MaxRSS as before."""
    plugin_log(tmp_path, "21")
    fake = FakeSacct(sacct_text("21", "OUT_OF_MEMORY", "0:125", "1000M", "1400M", "00:30:00"))
    start, end = (datetime.fromisoformat(t).timestamp() for t in (SUBMIT, END))
    memory_log = "logs/train/naive_cnn/fold0.memory.jsonl"
    log = MemoryLog(tmp_path / memory_log, "train")
    log.mark("epoch", time=start - 600, cgroup_peak_mb=1300.0)  # an earlier attempt
    log.mark("start", time=start + 5, cgroup_peak_mb=400.0)
    log.mark("epoch", time=start + 60, cgroup_peak_mb=990.0)
    log.mark("epoch", time=start + 61, cgroup_peak_mb=None)
    first = Request(1000, 30)

    def retry(memory_log: str | None, csv_name: str) -> tuple[Request, list[str]]:
        lines: list[str] = []
        sizer = RetrySizer(tmp_path, POLICY, start, tmp_path / csv_name, sacct=fake, announce=lines.append)
        return sizer.request("train", ["naive_cnn", "0"], 2, first, memory_log=memory_log), lines

    request, lines = retry(memory_log, "with.csv")
    assert request == Request(1500, 30), lines
    assert retry(None, "without.csv") == (
        Request(1680, 30),
        [
            "fvc retry: train naive_cnn_0 attempt 2: job 21 OUT_OF_MEMORY: mem_mb 1000 -> 1680, "
            "runtime 30 -> 30 min (peak 1400 MB (MaxRSS) x memory_safety 1.2)"
        ],
    )
    # A peak above the request is not the job's own cgroup (a container's): MaxRSS, as the audit does.
    log.mark("epoch", time=start + 62, cgroup_peak_mb=1250.0)
    assert retry(memory_log, "other.csv")[0] == Request(1680, 30)
    (tmp_path / memory_log).write_text("\n".join((tmp_path / memory_log).read_text().splitlines()[:-1]))
    safe = RetrySizer(tmp_path, replace(POLICY, memory_safety=1.6), start, tmp_path / "s.csv", sacct=fake)
    assert safe.request("train", ["naive_cnn", "0"], 2, first, memory_log=memory_log) == Request(1584, 30)
    with (tmp_path / "s.csv").open() as rows:
        (row,) = csv.DictReader(rows)
    assert (row["peak_mb"], row["reason"]) == ("990.0", "peak 990 MB (cgroup) x memory_safety 1.6")


def test_without_a_previous_job_or_sacct_each_retry_grows_memory_as_before(tmp_path: Path) -> None:
    def unavailable(ids, fields):
        raise SacctUnavailable("sacct: command not found")

    first, lines = Request(1000, 30), []
    local = RetrySizer(
        tmp_path, POLICY, 0, tmp_path / "retries.csv", sacct=unavailable, announce=lines.append
    )
    assert local.request("train", ["naive_cnn", "0"], 2, first) == Request(1500, 30)  # no job: no sacct call
    plugin_log(tmp_path, "3")
    assert local.request("train", ["naive_cnn", "0"], 3, first) == Request(2250, 30)
    assert "sacct: command not found" in lines[-1]
    remote = RetrySizer(tmp_path, POLICY, 0, tmp_path / "retries.csv", enabled=False, sacct=unavailable)
    assert remote.request("train", ["naive_cnn", "0"], 2, first) == Request(1500, 30)


# On the real test cluster: naive_cnn fold 0's train job, made to fail on its first attempt, retried once.
TARGET = "results/train/naive_cnn/fold0/metrics.json"
# Imported by every Python process of a run (PYTHONPATH); with FVC_TEST_SLOW set, the train job's script
# under SLURM sleeps past a 1-minute time limit, not past a 2-minute one.
SLOW = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time

    if os.environ.get("FVC_TEST_SLOW") and "SLURM_JOB_ID" in os.environ and sys.argv[0].endswith("train.py"):
        squeue = ["squeue", "-h", "-j", os.environ["SLURM_JOB_ID"], "-o", "%l"]
        if subprocess.run(squeue, capture_output=True, text=True).stdout.strip() == "1:00":
            # Stuck before training starts, deaf to SLURM's time-limit warning: the limit itself ends it.
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
            time.sleep(900)
    """
)


@pytest.fixture(scope="module")
def prepared(slurm_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny workflow whose data stages ran (locally: only train jobs go to SLURM in these tests)."""
    workdir = copy_workflow(tmp_path_factory.mktemp("retry"), TINY_CONFIG)
    cmd = [str(BIN / "snakemake"), "--profile", "profiles/local", "--configfile", "test_config.yaml"]
    done = subprocess.run(
        [*cmd, "--omit-from", "train"], cwd=workdir, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return workdir


def attempts(
    prepared: Path, dest: Path, case: dict, *, slow: bool = False, corrupt: bool = False
) -> tuple[list[dict], str]:
    """Run the train job with the config overrides `case` (one retry), slowed down when `slow` (SLOW), its
    clips truncated when `corrupt` (the training raises: a failure of the code's own); each attempt's
    sacct record (State, ExitCode, ReqMem, Timelimit, peak MaxRSS over its steps) in order, and the output."""
    workdir = Path(shutil.copytree(prepared, dest, symlinks=True))
    (workdir / "case.yaml").write_text(yaml.safe_dump(case))
    for clip in (workdir / "results" / "augment" / "clips").rglob("*.safetensors") if corrupt else ():
        clip.write_bytes(clip.read_bytes()[:16])
    (workdir / "faults").mkdir()
    (workdir / "faults" / "sitecustomize.py").write_text(SLOW)
    env = slurm_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(workdir / "faults"), env.get("PYTHONPATH")]))
    env["FVC_TEST_SLOW"] = "1" if slow else ""
    cmd = snakemake_cmd(
        TARGET, "--forcerun", TARGET, "--retries", "1", configfiles=("test_config.yaml", "case.yaml")
    )
    done = subprocess.run(
        cmd, cwd=workdir, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900
    )
    ids = submitted(done.stdout)
    assert len(ids) == 2, done.stdout[-6000:]
    steps = by_job(sacct(ids))
    limits = dict(
        line.split("|")
        for line in subprocess.run(
            ["sacct", "-P", "-n", "-X", "-j", ",".join(ids), "--format=JobID,Timelimit"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    )
    records = []
    for job_id in ids:
        alloc = steps[job_id][0]
        peak = max(mb(step["MaxRSS"]) for step in steps[job_id])
        records.append(
            {
                **alloc,
                "Timelimit": limits[job_id],
                "peak_mb": peak,
                "all_states": {r["State"] for r in steps[job_id]},
            }
        )
    print(f"{dest.name}: requests attempt by attempt")
    for number, record in enumerate(records, 1):
        print(
            f"  attempt {number}: job {record['JobID']} {record['State']} ReqMem {record['ReqMem']} "
            f"Timelimit {record['Timelimit']} peak {record['peak_mb']:.0f} MB"
        )
    return records, done.stdout


@pytest.mark.slurm
@pytest.mark.slow
def test_an_oom_retry_asks_at_least_the_measured_peak_times_safety(prepared: Path, tmp_path: Path) -> None:
    # memory_safety 3: the peak (killed at 300 MB) x 3 outweighs 300 x memory_growth once it passes 150 MB.
    case = {"models": {"naive_cnn": {"mem_mb": 300}}, "memory_growth": 1.5, "memory_safety": 3}
    first, second = attempts(prepared, tmp_path / "oom", case)[0]
    assert "OUT_OF_MEMORY" in first["all_states"], first
    expected = max(math.ceil(300 * 1.5), math.ceil(first["peak_mb"] * 3))
    assert (first["ReqMem"], second["ReqMem"]) == ("300M", f"{expected}M")
    assert first["Timelimit"] == second["Timelimit"]


@pytest.mark.slurm
@pytest.mark.slow
def test_a_timeout_retry_asks_more_time_and_the_same_memory(prepared: Path, tmp_path: Path) -> None:
    # SLURM's own TIMEOUT, without the time-limit warning (tests/test_time_limit.py covers that path): under
    # load the second attempt's training outlived the warning at half its 2-minute limit and stopped there.
    case = {"models": {"naive_cnn": {"runtime": 1}}, "train": {"signal_before_limit_s": 0}}
    (first, second), out = attempts(prepared, tmp_path / "timeout", case, slow=True)
    assert (first["State"], second["State"]) == ("TIMEOUT", "COMPLETED")
    assert (first["Timelimit"], second["Timelimit"]) == ("00:01:00", "00:02:00")
    assert first["ReqMem"] == second["ReqMem"]
    mem = first["ReqMem"].removesuffix("M")
    assert f"job {first['JobID']} TIMEOUT: mem_mb {mem} -> {mem}, runtime 1 -> 2 min" in out
    logged = list(csv.DictReader((tmp_path / "timeout" / "logs" / "retries.csv").open()))
    assert [(r["previous_job"], r["previous_state"], r["new_runtime"]) for r in logged] == [
        (first["JobID"], "TIMEOUT", "2")
    ]


@pytest.mark.slurm
@pytest.mark.slow
def test_a_retry_after_an_exception_asks_the_same_resources(prepared: Path, tmp_path: Path) -> None:
    (first, second), out = attempts(prepared, tmp_path / "exception", {}, corrupt=True)
    assert (first["State"], first["ExitCode"], second["State"]) == ("FAILED", "1:0", "FAILED")
    assert (first["ReqMem"], first["Timelimit"]) == (second["ReqMem"], second["Timelimit"])
    assert "the job's own failure (exit 1:0): same resources" in out
