"""Wall time of the tiny demo workflow on the SLURM profile vs the local profile, side by side in one run.

Each case runs `snakemake` in a fresh copy of the workflow, in a fresh child process (its peak RSS read with
wait4). For the SLURM run, sacct's Submit/Start/End times and Snakemake's log split each job's time into
queue wait (Submit -> Start), job start-up (the two snakemake processes of a SLURM job: elapsed minus the
rule's own benchmark seconds), the rule's work, and status polling (End -> Snakemake logs it finished).

    .venv/bin/python benchmarks/slurm_vs_local.py [--config tests/slurm/tiny_config.yaml] [--keep DIR]

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
WORKFLOW_FILES = ("Snakefile", "config.yaml", "rules", "workflow_scripts", "schemas", "envs", "profiles")
TARGET_RATIO = 2.0
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)")


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


def run_case(workdir: Path, profile: str) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB of the snakemake process tree's largest process, log) of one run."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.setdefault("FVC_SLURM_ACCOUNT", "fvc")
    env.setdefault("FVC_SLURM_PARTITION", "debug")
    cmd = [str(BIN / "snakemake"), "--profile", profile, "--configfile", "test_config.yaml"]
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


def finish_times(text: str) -> dict[str, datetime]:
    """SLURM job id -> when Snakemake logged the job finished (the timestamp line before it)."""
    latest: dict[str, str] = {}
    stamp, seen = None, {}
    for line in text.splitlines():
        if match := STAMP.match(line):
            stamp = datetime.strptime(match[1], "%a %b %d %H:%M:%S %Y")
        elif match := SUBMITTED.search(line):
            latest[match[1]] = match[2]
        elif (match := FINISHED.match(line)) and match[1] in latest and stamp:
            seen[latest[match[1]]] = stamp
    return seen


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
    """SLURM job id -> the job's Snakemake benchmark TSV, from the job blocks of the log."""
    latest, paths, jobid = {}, {}, None
    for line in text.splitlines():
        if match := re.match(r"\s+jobid: (\d+)", line):
            jobid = match[1]
        elif (match := re.match(r"\s+benchmark: (\S+)", line)) and jobid:
            paths[jobid] = match[1]
        elif match := SUBMITTED.search(line):
            latest[match[2]] = paths.get(match[1])
    return {slurm_id: path for slurm_id, path in latest.items() if path}


def rule_seconds(path: Path) -> float | None:
    """The rule's own run time (`s`) from its Snakemake benchmark TSV."""
    if not path.is_file():
        return None
    with path.open() as handle:
        return float(next(csv.DictReader(handle, delimiter="\t"))["s"])


def breakdown(workdir: Path, text: str) -> list[dict[str, float | str]]:
    """Per SLURM job: queue wait, start-up overhead, the rule's work and status-polling lag (seconds)."""
    ids = [slurm_id for _, slurm_id in SUBMITTED.findall(text)]
    finished = finish_times(text)
    tsv = benchmark_files(text)
    rows = []
    for job in sacct_jobs(ids):
        submit, start, end = (datetime.fromisoformat(job[k]) for k in ("Submit", "Start", "End"))
        elapsed = float(job["ElapsedRaw"])
        work = rule_seconds(workdir / tsv[job["JobID"]]) if job["JobID"] in tsv else None
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


def cluster_running() -> bool:
    return subprocess.run([str(CLUSTER_SH), "status"], capture_output=True).returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "tests" / "slurm" / "tiny_config.yaml")
    parser.add_argument("--keep", type=Path, default=None, help="run in this folder and keep it")
    args = parser.parse_args(argv)
    started = not cluster_running()
    if started:
        subprocess.run([str(CLUSTER_SH), "start"], check=True)
    base = Path(tempfile.mkdtemp(prefix="fvc-slurm-bench-")) if args.keep is None else args.keep
    try:
        local_dir = copy_workflow(base / "local", args.config)
        slurm_dir = copy_workflow(base / "slurm", args.config)
        local_wall, local_rss, local_log = run_case(local_dir, "profiles/local")
        slurm_wall, slurm_rss, slurm_log = run_case(slurm_dir, "profiles/slurm")
        jobs = breakdown(slurm_dir, slurm_log)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
        if started:
            subprocess.run([str(CLUSTER_SH), "stop"], check=False)

    local_jobs = len(re.findall(r"^Finished jobid: \d+ \(Rule: (?!all\))", local_log, re.M))
    print(f"{'case':<8} {'wall s':>8} {'jobs':>5} {'driver peak RSS MB':>19}")
    print(f"{'local':<8} {local_wall:8.1f} {local_jobs:5d} {local_rss:19.0f}")
    print(f"{'slurm':<8} {slurm_wall:8.1f} {len(jobs):5d} {slurm_rss:19.0f}")
    print()
    print(f"{'SLURM job':<32} {'queue s':>8} {'start-up s':>10} {'work s':>7} {'poll lag s':>10}")
    for row in jobs:
        print(
            f"{row['job']:<32} {row['queue']:8.1f} {row['startup']:10.1f} {row['work']:7.1f} "
            f"{row['poll']:10.1f}"
        )
    for key in ("queue", "startup", "work", "poll"):
        values = [float(row[key]) for row in jobs if row[key] == row[key]]
        if values:
            print(f"  {key:<8} mean {mean(values):6.1f} s   sum {sum(values):7.1f} s over {len(values)} jobs")
    ratio = slurm_wall / local_wall
    verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
    print(f"\nslurm / local wall time = {ratio:.2f}x (target <= {TARGET_RATIO:.0f}x): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
