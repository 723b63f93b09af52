"""Wall time of the tiny demo workflow on the SLURM profile vs the local profile, side by side in one run.

The cases alternate (local, slurm, local, slurm, ... `--rounds` times) so that a change in the machine's load
falls on both, and every run must finish the same set of jobs (rule and wildcards): the local rules
(`localrule: True`: demo_data, download, audit) run inside the driving snakemake on either profile, the
others are one SLURM job each on the SLURM profile. `--compare "ARGS"` adds a third case, the SLURM profile
with extra command-line options (e.g. the poll settings before a change), so before and after are measured
side by side too.

For each SLURM run, sacct's Submit/Start/End times and Snakemake's log split each SLURM job's time into queue
wait (Submit -> Start), job start-up (the two snakemake processes of a SLURM job: elapsed minus the rule's own
benchmark seconds), the rule's work, and status-poll lag (End -> Snakemake logs it finished).

    .venv/bin/python benchmarks/slurm_vs_local.py [--config tests/slurm/tiny_config.yaml] [--rounds 2]
        [--compare "--seconds-between-status-checks 10"] [--keep DIR]

Needs the test cluster (`tests/slurm/cluster.sh start`; started here when not running, then stopped).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLUSTER_SH = ROOT / "tests" / "slurm" / "cluster.sh"
WORKFLOW_FILES = ("Snakefile", "config.yaml", "rules", "workflow_scripts", "envs", "profiles", "report")
TARGET_RATIO = 2.0
SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+)")  # a group job: a uuid
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)")
JOB_HEADER = re.compile(r"^\s*(?:local)?rule (\w+):$")
WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")


def copy_workflow(dest: Path, configfile: Path) -> Path:
    """A fresh copy of the workflow files with `configfile` as test_config.yaml."""
    dest.mkdir(parents=True)
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    shutil.copy2(configfile, dest / "test_config.yaml")
    return dest


def run_case(workdir: Path, profile: str, *args: str) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB of the snakemake process tree's largest process, log) of one run; `args`:
    more command-line options or targets."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.setdefault("FVC_SLURM_ACCOUNT", "fvc")
    env.setdefault("FVC_SLURM_PARTITION", "debug")
    cmd = [str(BIN / "snakemake"), *args, "--profile", profile, "--configfile", "test_config.yaml"]
    log = workdir / "benchmark_run.log"
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    text = log.read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"snakemake --profile {profile} failed in {workdir}:\n{text[-3000:]}")
    return wall, usage.ru_maxrss / 1024, text


def job_members(text: str) -> dict[str, list[str]]:
    """SLURM job id -> the Snakemake job ids it ran: its own, or a group job's members (`--groups`)."""
    members: dict[str, list[str]] = {}
    group: list[str] | None = None
    for line in text.splitlines():
        if "Group job " in line:
            group = []
        elif group is not None and (match := re.match(r"\s+jobid: (\d+)", line)):
            group.append(match[1])
        elif match := SUBMITTED.search(line):
            is_group = not match[1].isdigit()
            members[match[2]] = (group or []) if is_group else [match[1]]
            group = None if is_group else group
    return members


def finish_times(text: str, members: dict[str, list[str]]) -> dict[str, datetime]:
    """SLURM job id -> when Snakemake logged its (last member) job finished (the timestamp line before)."""
    stamp, done = None, {}
    for line in text.splitlines():
        if match := STAMP.match(line):
            stamp = datetime.strptime(match[1], "%a %b %d %H:%M:%S %Y")
        elif (match := FINISHED.match(line)) and stamp:
            done[match[1]] = stamp
    return {
        slurm_id: max(done[j] for j in jobs)
        for slurm_id, jobs in members.items()
        if jobs and all(j in done for j in jobs)
    }


def sacct_jobs(job_ids: list[str]) -> list[dict[str, str]]:
    fields = ["JobID", "Comment", "Submit", "Start", "End", "ElapsedRaw"]
    out = subprocess.run(
        ["sacct", "-P", "-n", "-X", "-j", ",".join(job_ids), f"--format={','.join(fields)}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines() if line]


def benchmark_files(text: str) -> dict[str, str]:
    """Snakemake job id -> the job's Snakemake benchmark TSV, from the job blocks of the log."""
    paths, jobid = {}, None
    for line in text.splitlines():
        if match := re.match(r"\s+jobid: (\d+)", line):
            jobid = match[1]
        elif (match := re.match(r"\s+benchmark: (\S+)", line)) and jobid:
            paths[jobid] = match[1]
    return paths


def rule_seconds(path: Path) -> float | None:
    """The rule's own run time (`s`) from its Snakemake benchmark TSV."""
    if not path.is_file():
        return None
    with path.open() as handle:
        return float(next(csv.DictReader(handle, delimiter="\t"))["s"])


def breakdown(workdir: Path, text: str) -> list[dict[str, float | str]]:
    """Per SLURM job: queue wait, start-up overhead, the rule's work and status-polling lag (seconds)."""
    members = job_members(text)
    finished = finish_times(text, members)
    tsv = benchmark_files(text)
    rows = []
    for job in sacct_jobs(list(members)):
        submit, start, end = (datetime.fromisoformat(job[k]) for k in ("Submit", "Start", "End"))
        elapsed = float(job["ElapsedRaw"])
        seconds = [rule_seconds(workdir / tsv[j]) if j in tsv else None for j in members[job["JobID"]]]
        known = [x for x in seconds if x is not None]
        work = sum(known) if seconds and len(known) == len(seconds) else None
        seen = finished.get(job["JobID"])
        rows.append(
            {
                "job": job["Comment"].removeprefix("rule_").replace("_wildcards_", " "),
                "queue": (start - submit).total_seconds(),
                "startup": elapsed - work if work is not None else float("nan"),
                "work": work if work is not None else float("nan"),
                "poll": (seen - end).total_seconds() if seen else float("nan"),
            }
        )
    return rows


def jobs_run(text: str) -> list[str]:
    """The jobs a run finished, `rule wildcards` each (the target rule `all` left out), sorted."""
    blocks: dict[str, str] = {}
    rule, done = None, []
    for line in text.splitlines():
        if match := JOB_HEADER.match(line):
            rule = match[1]
        elif (match := re.match(r"\s+jobid: (\d+)", line)) and rule:
            blocks[match[1]] = rule
        elif (match := WILDCARDS.match(line)) and rule and blocks:
            last = next(reversed(blocks))
            blocks[last] = f"{blocks[last]} {match[1]}"
        elif (match := FINISHED.match(line)) and match[2] != "all":
            done.append(blocks.get(match[1], match[2]))
    return sorted(done)


def cluster_running() -> bool:
    return subprocess.run([str(CLUSTER_SH), "status"], capture_output=True).returncode == 0


def print_breakdown(name: str, jobs: list[dict[str, float | str]]) -> None:
    print(f"\n{name}")
    print(f"  {'SLURM job':<32} {'queue s':>8} {'start-up s':>10} {'work s':>7} {'poll lag s':>10}")
    for row in jobs:
        times = f"{row['queue']:8.1f} {row['startup']:10.1f} {row['work']:7.1f} {row['poll']:10.1f}"
        print(f"  {row['job']:<32} {times}")
    for key in ("queue", "startup", "work", "poll"):
        values = [float(row[key]) for row in jobs if row[key] == row[key]]
        if values:
            print(f"  {key:<8} mean {mean(values):6.1f} s   sum {sum(values):7.1f} s over {len(values)} jobs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "tests" / "slurm" / "tiny_config.yaml")
    parser.add_argument("--rounds", type=int, default=2, help="local, slurm pairs, alternating")
    parser.add_argument("--compare", default=None, help="a third case: SLURM plus these options")
    parser.add_argument("--keep", type=Path, default=None, help="run in this folder and keep it")
    args = parser.parse_args(argv)
    cases = {"local": ("profiles/local",), "slurm": ("profiles/slurm",)}
    if args.compare:
        cases[f"slurm {args.compare}"] = ("profiles/slurm", *args.compare.split())
    started = not cluster_running()
    if started:
        subprocess.run([str(CLUSTER_SH), "start"], check=True)
    base = Path(tempfile.mkdtemp(prefix="fvc-slurm-bench-")) if args.keep is None else args.keep
    walls: dict[str, list[float]] = {name: [] for name in cases}
    driver_mb: dict[str, float] = {}
    breakdowns: dict[str, list[dict[str, float | str]]] = {}
    job_sets: dict[str, list[str]] = {}
    try:
        for round_ in range(args.rounds):
            for index, (name, (profile, *extra)) in enumerate(cases.items()):
                workdir = copy_workflow(base / f"r{round_}c{index}", args.config)
                wall, rss, log = run_case(workdir, profile, *extra)
                walls[name].append(wall)
                driver_mb[name] = max(driver_mb.get(name, 0.0), rss)
                job_sets[name] = jobs_run(log)
                if profile != "profiles/local":
                    breakdowns[f"{name} (round {round_ + 1})"] = breakdown(workdir, log)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
        if started:
            subprocess.run([str(CLUSTER_SH), "stop"], check=False)

    reference = job_sets["local"]
    print(f"{len(reference)} jobs per run; the cases ran in turn, {args.rounds} round(s): {', '.join(cases)}")
    for name, jobs in job_sets.items():
        if jobs != reference:
            sys.exit(f"{name} ran other jobs than local:\n{jobs}\nvs\n{reference}")
    width = max(len(name) for name in cases)
    print(f"{'case':<{width}} {'wall s per round':>24} {'mean':>7} {'/ local':>8} {'driver MB':>10}")
    local = mean(walls["local"])
    for name, values in walls.items():
        rounds = " ".join(f"{v:.1f}" for v in values)
        ratio = mean(values) / local
        print(f"{name:<{width}} {rounds:>24} {mean(values):7.1f} {ratio:7.2f}x {driver_mb[name]:10.0f}")
    for name, jobs in breakdowns.items():
        print_breakdown(name, jobs)
    ratio = mean(walls["slurm"]) / local
    verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
    print(f"\nslurm / local wall time = {ratio:.2f}x (target <= {TARGET_RATIO:.0f}x): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
