"""The audit finds every job's memory log from its row (rule and wildcards, fvc.core.paths.job_logs): the
shard jobs' `logs/<stage>/shard<k>of<N>.memory.jsonl` (the records in the job's Start..End tell which N)
and the merge jobs' `logs/<stage>/<stage>.memory.jsonl`, and takes the enforced (cgroup) peak from it. Its
fallback without sacct, Snakemake's benchmark files, names every job's rule and wildcards as sacct would."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

from workflow_runner import copy_workflow, snakemake

from fvc.core.config import load_config
from fvc.core.memory import MemoryLog
from fvc.slurm.jobs import JobRef, parse_comment, split_member, wildcard_values
from fvc.slurm.rows import add_memory_logs, benchmark_rows, memory_logs, sacct_rows
from fvc.slurm.sacct import FIELDS, parse_sacct

BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def sacct_line(**values: str) -> str:
    return "|".join(values.get(field, "") for field in FIELDS)


def sacct_job(job_id: str, comment: str, start: float, end: float) -> list[str]:
    """sacct's lines of one finished job (its allocation and batch step) as the plugin's jobs show them: 1000
    MB asked, 700 MB MaxRSS, the rule and wildcards in the comment."""
    when = {
        "Start": datetime.fromtimestamp(start).isoformat(timespec="seconds"),
        "End": datetime.fromtimestamp(end).isoformat(timespec="seconds"),
    }
    return [
        sacct_line(JobID=job_id, JobIDRaw=job_id, JobName="run-1", State="COMPLETED", ExitCode="0:0",
                   ReqMem="1000M", Elapsed="00:00:20", TotalCPU="00:10", AllocCPUS="1", NNodes="1",
                   Timelimit="00:10:00", Comment=comment, **when),
        sacct_line(JobID=f"{job_id}.batch", JobIDRaw=f"{job_id}.batch", JobName="batch", State="COMPLETED",
                   ExitCode="0:0", MaxRSS="700M", Elapsed="00:00:20", TotalCPU="00:10", AllocCPUS="1",
                   NNodes="1", NTasks="1", **when),
    ]  # fmt: skip


def write_memory_log(path: Path, stage: str, cgroup_peaks: list[float], when: float) -> None:
    """A memory log as the job's MemoryLog writes it, with the given cgroup peaks at time `when`."""
    log = MemoryLog(path, stage)
    for peak in cgroup_peaks:
        log.mark("point", time=when, cgroup_peak_mb=peak)


def test_shard_and_merge_jobs_take_the_cgroup_peak_of_their_memory_logs(tmp_path: Path) -> None:
    now = time.time()
    jobs = {
        "11": "rule_index_shard_wildcards_1",
        "12": "rule_augment_shard_wildcards_0",
        "13": "rule_download_shard_wildcards_1",
        "14": "rule_index",
        "15": "rule_augment_shard_wildcards_3",  # no memory log: MaxRSS stays
    }
    text = "\n".join(line for job_id, c in jobs.items() for line in sacct_job(job_id, c, now - 20, now))
    parsed = parse_sacct(text)
    refs = {job_id: JobRef(job_id, *parse_comment(comment)) for job_id, comment in jobs.items()}
    logs = tmp_path / "logs"
    write_memory_log(logs / "index/shard1of4.memory.jsonl", "index", [300.0, 420.0], now - 10)
    # The same shard of an earlier run with 2 shards, before this job started: not this job's records.
    write_memory_log(logs / "index/shard1of2.memory.jsonl", "index", [900.0], now - 3600)
    write_memory_log(logs / "index/shard11of16.memory.jsonl", "index", [950.0], now - 10)  # shard 11
    write_memory_log(logs / "augment/shard0of4.memory.jsonl", "augment", [510.0], now - 10)
    write_memory_log(logs / "download/shard1of4.memory.jsonl", "download", [250.0], now - 10)
    write_memory_log(logs / "index/index.memory.jsonl", "index", [610.0], now - 10)
    rows = {row["job_id"]: row for row in add_memory_logs(sacct_rows(refs, parsed), tmp_path)}
    peaks = {job_id: (row["peak_mem_mb"], row["peak_source"]) for job_id, row in rows.items()}
    assert peaks == {
        "11": (420.0, "cgroup"),
        "12": (510.0, "cgroup"),
        "13": (250.0, "cgroup"),
        "14": (610.0, "cgroup"),
        "15": (700.0, "MaxRSS"),
    }
    assert rows["11"]["max_rss_mb"] == 700.0 and rows["11"]["mem_eff"] == 42.0
    assert rows["11"]["flag"] == "<60% used"


def dry_run_jobs(workdir: Path) -> list[tuple[str, str, list[str], str]]:
    """(rule, wildcards as the SLURM plugin joins them, log files, benchmark file) of every job a dry run
    plans."""
    done = snakemake(workdir, "-n", "--cores", "1", "--forceall")
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", done.stdout + done.stderr):
        if not (head := re.match(r"(?:local)?rule (\w+):\n", block)):
            continue
        logs = re.search(r"^    log: (.*)$", block, re.M)
        wildcards = re.search(r"^    wildcards: (.*)$", block, re.M)
        values = wildcard_values(wildcards[1], ", ") if wildcards else ""
        benchmark = re.search(r"^    benchmark: (.*)$", block, re.M)
        jobs.append((head[1], values, logs[1].split(", ") if logs else [], benchmark[1] if benchmark else ""))
    return jobs


def test_every_job_s_memory_log_and_benchmark_are_found_from_its_rule_and_wildcards(tmp_path: Path) -> None:
    """A dry run of the workflow with 3 shards: each job's memory log, once written, is the one the audit
    finds from the job's rule and wildcards (and only that one)."""
    work = copy_workflow(tmp_path / "wf")
    with (work / "test_config.yaml").open("a") as config:
        config.write("shards: {count: 3}\n")
    jobs = dry_run_jobs(work)
    stages = {"download_shard", "index_shard", "augment_shard", "download", "index", "augment", "train"}
    assert stages <= {rule for rule, *_ in jobs}
    assert {rule for rule, _, logs, _ in jobs if not logs} == {"all"}
    jobs = [job for job in jobs if job[0] != "all"]
    for _, _, logs, _ in jobs:
        (memory,) = [log for log in logs if log.endswith(".memory.jsonl")]
        write_memory_log(work / memory, "", [1.0], time.time())
    for rule, values, logs, _ in jobs:
        (memory,) = [log for log in logs if log.endswith(".memory.jsonl")]
        if rule.endswith("_shard"):
            assert re.fullmatch(rf"logs/\w+/shard{values}of3\.memory\.jsonl", memory), (rule, memory)
        model, fold, seed = split_member(values)
        row = {"rule": rule, "wildcards": values, "model": model, "fold": fold, "seed": seed}
        assert memory_logs(work, row) == [work / memory], (rule, values)
    # Without sacct the audit reads the benchmark files: each names its rule and wildcards as sacct does.
    for _, _, _, benchmark in jobs:
        (work / benchmark).parent.mkdir(parents=True, exist_ok=True)
        (work / benchmark).write_text(BENCH_HEADER + "1.0\t0:00:01\t50\t60\t40\t45\t-\t-\t-\t0.5\n")
    rows = benchmark_rows(work, load_config(work / "config.yaml"))
    assert sorted((r["rule"], r["wildcards"]) for r in rows) == sorted(
        (rule, values) for rule, values, *_ in jobs
    )
    assert all(r["req_mem_mb"] for r in rows), [r for r in rows if not r["req_mem_mb"]]
