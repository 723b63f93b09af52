"""Per-job audit rows (requested vs used memory, time, CPU, GPUs held and their peak memory) from sacct's
records or Snakemake's benchmark files, completed by the jobs' memory logs (cgroup and CUDA peaks), and the
table they are written to.

Efficiencies follow reportseff: memory = peak / ReqMem, time = Elapsed / Timelimit, CPU = TotalCPU /
(AllocCPUS x Elapsed). The memory peak is the one SLURM enforces where the job's memory log recorded it (its
cgroup's `memory.max_usage_in_bytes`, v1, or `memory.peak`, v2: the counter the cgroup limit applies to),
else sacct's MaxRSS (which counts shared pages once per process); `peak_source` says which."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime
from pathlib import Path

import polars as pl

from fvc.core.errors import FvcError
from fvc.core.paths import SHARD_RULES, job_logs, member
from fvc.slurm.jobs import ARRAY_TASK_RE, JobRef, id_order, parse_comment, split_member
from fvc.slurm.memory_keys import configured_mem_mb, snakemake_overhead_mb
from fvc.slurm.sacct import MB, Job

log = logging.getLogger(__name__)

LOW, HIGH = 60.0, 90.0
#: A GPU busier than this (sacct's gres/gpuutil peak, %) at no point of the job is flagged idle.
GPU_IDLE = 20.0
BENCHMARKS = Path("logs", "benchmarks")
#: A finished job that used more of its time limit than this (%) is flagged.
TIME_HIGH = 90.0
#: The rules whose logs are per model (fvc.core.paths.job_logs) and whose memory logs record CUDA peaks.
MODEL_RULES = ("train", "infer")
#: Seconds of slack around a job's sacct Start and End when matching its memory-log records.
CLOCK_SLACK_S = 2.0
SCHEMA = {
    "job_id": pl.String, "run": pl.String, "rule": pl.String, "wildcards": pl.String, "model": pl.String,
    "fold": pl.Int64, "seed": pl.Int64, "attempt": pl.Int64, "state": pl.String, "req_mem_mb": pl.Float64,
    "predicted_mb": pl.Float64, "peak_mem_mb": pl.Float64, "peak_source": pl.String, "max_rss_mb": pl.Float64,
    "mem_eff": pl.Float64,
    "elapsed_s": pl.Float64, "time_limit_s": pl.Float64, "time_eff": pl.Float64, "cpus": pl.Int64,
    "cpu_eff": pl.Float64, "gpus": pl.Int64, "gpu_peak_mb": pl.Float64, "gpu_util": pl.Float64,
    "source": pl.String, "flag": pl.String,
}  # fmt: skip


def _flag(state: str, eff: float | None) -> str:
    """OOM, the state of any other unfinished job (its use says nothing about what it needs), or over/under
    use of a finished job's memory."""
    if state == "OUT_OF_MEMORY":
        return "OOM"
    if state != "COMPLETED":
        return state
    if eff is None:
        return ""
    return f">{HIGH:.0f}% used" if eff > HIGH else f"<{LOW:.0f}% used" if eff < LOW else ""


def _time_flag(state: str, eff: float | None) -> str:
    return (
        f"time >{TIME_HIGH:.0f}% of limit"
        if state == "COMPLETED" and eff is not None and eff > TIME_HIGH
        else ""
    )


def _gpu_flag(gpus: int, util: float | None) -> str:
    return f"GPU idle (<{GPU_IDLE:.0f}% used)" if gpus and util is not None and util < GPU_IDLE else ""


def _join(*flags: str) -> str:
    return "; ".join(flag for flag in flags if flag)


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / MB, 1)


def _number_attempts(rows: list[dict]) -> list[dict]:
    """Attempt = order of submission among jobs of the same run, rule and wildcards (job ids grow with time):
    a rerun's first submission is attempt 1 again."""
    rows.sort(key=lambda r: (r["rule"], r["wildcards"], id_order(r["job_id"])))
    counts: dict[tuple[str, str, str], int] = {}
    for row in rows:
        key = (row["run"], row["rule"], row["wildcards"])
        counts[key] = row["attempt"] = counts.get(key, 0) + 1
    return rows


def run_order(rows: list[dict]) -> list[str]:
    """The runs (SLURM run ids: the plugin's job name) of these rows, oldest first (by their last job id)."""
    last: dict[str, tuple[int, ...]] = {}
    for row in rows:
        last[row["run"]] = max(last.get(row["run"], ()), id_order(row["job_id"]))
    return sorted(last, key=last.__getitem__)


def select_run(rows: list[dict], run: str | None) -> list[dict]:
    """The rows of one run: `run` (a run id, or a unique prefix of one), the latest when None."""
    runs = run_order(rows)
    if not runs:
        return rows
    if run is None:
        chosen = runs[-1]
    else:
        matches = [r for r in runs if r.startswith(run)]
        if len(matches) != 1:
            raise FvcError(
                f"run {run!r}: {'ambiguous' if matches else 'unknown'}; the runs: {', '.join(runs)}"
            )
        chosen = matches[0]
    return [row for row in rows if row["run"] == chosen]


def _percent_of(part: float | None, whole: float | None) -> float | None:
    return round(100 * part / whole, 1) if part is not None and whole else None


def job_row(ref: JobRef, job: Job) -> dict:
    """One audit row from a job's sacct records."""
    alloc = job.allocation
    req, peak = job.req_mem, job.max_rss
    eff = _percent_of(peak, req)
    cpu_eff = time_eff = None
    if alloc is not None and alloc.elapsed_s and alloc.total_cpu_s is not None:
        cpu_eff = _percent_of(alloc.total_cpu_s, alloc.elapsed_s * alloc.alloc_cpus)
    if alloc is not None and alloc.state != "PENDING":
        time_eff = _percent_of(alloc.elapsed_s, alloc.time_limit_s)
    rule, wildcards = ref.rule, ref.wildcards
    # An array task's comment is its array's first task's (fvc.slurm.jobs): it names the task's wildcards only
    # where the logs named none (a task alone in its array, or ids without the plugin's logs).
    own_comment = not ARRAY_TASK_RE.fullmatch(ref.job_id) or not ref.wildcards
    if alloc is not None and own_comment and (parsed := parse_comment(alloc.comment)):
        rule, wildcards = parsed
    model, fold, seed = split_member(wildcards)
    state = job.state
    return {
        "job_id": ref.job_id,
        "run": alloc.name if alloc is not None else "",
        "rule": rule,
        "wildcards": wildcards,
        "model": model,
        "fold": fold,
        "seed": seed,
        "attempt": 0,
        "state": state,
        "req_mem_mb": _mb(req),
        "peak_mem_mb": _mb(peak),
        "peak_source": "MaxRSS" if peak is not None else "",
        "max_rss_mb": _mb(peak),
        "mem_eff": eff,
        "elapsed_s": alloc.elapsed_s if alloc is not None else None,
        "time_limit_s": alloc.time_limit_s if alloc is not None else None,
        "time_eff": time_eff,
        "cpus": alloc.alloc_cpus if alloc is not None else None,
        "cpu_eff": cpu_eff,
        "gpus": job.gpus,
        "gpu_peak_mb": _mb(job.gpu_mem),
        "gpu_util": job.gpu_util,
        "source": "sacct",
        "flag": _join(_flag(state, eff), _time_flag(state, time_eff), _gpu_flag(job.gpus, job.gpu_util)),
        "start": _epoch(alloc.start) if alloc is not None else None,
        "end": _epoch(alloc.end) if alloc is not None else None,
    }


def _epoch(text: str) -> float | None:
    """Seconds since the epoch of a sacct time (`2026-11-29T20:09:49`, the cluster's local time)."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def sacct_rows(refs: dict[str, JobRef], jobs: dict[str, Job]) -> list[dict]:
    """Audit rows of the jobs sacct knows (a job id it has forgotten is logged and skipped)."""
    missing = sorted(set(refs) - set(jobs), key=id_order)
    if missing:
        log.warning("sacct has no record of jobs %s (purged from accounting, or another cluster)", missing)
    return _number_attempts([job_row(ref, jobs[job_id]) for job_id, ref in refs.items() if job_id in jobs])


def _column_max(table: pl.DataFrame, column: str) -> float | None:
    """The largest number in a benchmark file's column; None when it has none (no column, or all NA)."""
    if column not in table.columns:
        return None
    value = table.select(pl.col(column).max()).item()
    return None if value is None else float(value)


def _plain(match: re.Match) -> str:
    """A benchmark file's member (`fold0`, `fold0-seed7`) as the plugin's wildcards write it (`0`, `0_7`)."""
    seed = f"_{match[3]}" if match[3] else ""
    return f"{match[1]}{match[2]}{seed}"


def benchmark_rows(workdir: str | Path, config: dict) -> list[dict]:
    """Rows from Snakemake's `logs/benchmarks/<rule>/<wildcards>.tsv` (max_rss in MiB, plus the per-job
    Snakemake overhead) with the config's first-attempt request: the fallback when sacct cannot be asked."""
    rows = []
    root = Path(workdir, BENCHMARKS)
    overhead = snakemake_overhead_mb(config)
    for tsv in sorted(root.glob("*/**/*.tsv")):
        rel = tsv.relative_to(root)
        rule = rel.parts[0]
        wildcards = "_".join((*rel.parts[1:-1], rel.stem)) if len(rel.parts) > 2 else rel.stem
        wildcards = "" if wildcards == rule else re.sub(r"(^|_)fold(\d+)(?:-seed(\d+))?$", _plain, wildcards)
        try:
            table = pl.read_csv(tsv, separator="\t", null_values=["NA", "-"])
        except Exception as exc:  # noqa: BLE001 - a broken file is reported and skipped
            log.warning("%s: unreadable benchmark file (%s); skipped", tsv, exc)
            continue
        rss = _column_max(table, "max_rss")
        if rss is None:
            log.warning("%s: no max_rss value; skipped", tsv)
            continue
        model, fold, seed = split_member(wildcards)
        req = configured_mem_mb(config, rule, model)
        peak = round(rss + overhead, 1)
        eff = round(100 * peak / req, 1) if req else None
        cpu, seconds = _column_max(table, "cpu_time"), _column_max(table, "s")
        rows.append(
            {
                "job_id": "",
                "run": "",
                "rule": rule,
                "wildcards": wildcards,
                "model": model,
                "fold": fold,
                "seed": seed,
                "attempt": table.height,
                "state": "COMPLETED",
                "req_mem_mb": None if req is None else float(req),
                "peak_mem_mb": peak,
                "peak_source": "benchmark",
                "max_rss_mb": peak,
                "mem_eff": eff,
                "elapsed_s": seconds,
                "time_limit_s": None,
                "time_eff": None,
                "cpus": None,
                "cpu_eff": _percent_of(cpu, seconds),
                "gpus": config["models"].get(model, {}).get("gpus", 0) if model else 0,
                "gpu_peak_mb": None,
                "gpu_util": None,
                "source": "benchmark",
                "flag": _flag("COMPLETED", eff),
            }
        )
    return rows


def memory_log_path(workdir: str | Path, row: dict) -> Path:
    """The memory log the row's rule writes (`log: memory=` of its rule: fvc.core.paths.job_logs); for a shard
    job a glob pattern over the shard counts (`shard<k>of*`)."""
    name = member(row["fold"], row.get("seed"))
    logs = job_logs(row["rule"], model=row["model"], member=name, shard=row.get("wildcards"), shards="*")
    return Path(workdir, logs.memory)


def memory_logs(workdir: str | Path, row: dict) -> list[Path]:
    """The memory logs of the row's job that exist: its rule's, or for a shard job (wildcards `k`) each
    `shard<k>of<N>` one: whatever N the job ran with, its records are those of the job's Start..End."""
    path = memory_log_path(workdir, row)
    if row["rule"] not in SHARD_RULES:
        return [path] if path.is_file() else []
    if not row["wildcards"].isdigit():
        return []
    return sorted(path.parent.glob(path.name))


def job_records(path: Path, start: float | None, end: float | None) -> list[dict]:
    """A memory log's records, those written between `start` and `end` (epoch seconds) when both are known:
    the log is appended to by every attempt and run."""
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        when = record.get("time")
        if start is not None and end is not None and when is not None:
            if not start - CLOCK_SLACK_S <= when <= end + CLOCK_SLACK_S:
                continue
        records.append(record)
    return records


def _largest(records: list[dict], *keys: str) -> float | None:
    """The largest value over the records of the first of `keys` each record has."""
    values = []
    for record in records:
        value = next((record[k] for k in keys if record.get(k) is not None), None)
        if value is not None:
            values.append(float(value))
    return max(values) if values else None


def enforced_peak(records: list[dict], request_mb: float | None) -> float | None:
    """The cgroup peak (MB) of a job's memory-log records, the measure SLURM's limit applies to, when it lies
    within the job's request (a larger one is not the job's own cgroup, e.g. a container's)."""
    peak = _largest(records, "cgroup_peak_mb")
    return peak if peak is not None and request_mb and peak <= request_mb * 1.01 else None


def _use_cgroup_peak(row: dict, peak: float) -> None:
    """Base the row's peak and memory flag on the cgroup peak (the measure SLURM's limit applies to)."""
    row["peak_mem_mb"], row["peak_source"] = round(peak, 1), "cgroup"
    row["mem_eff"] = _percent_of(row["peak_mem_mb"], row["req_mem_mb"])
    kept = [f for f in (row["flag"] or "").split("; ") if f and not f.endswith("% used")]
    row["flag"] = _join(_flag(row["state"], row["mem_eff"]) if row["state"] == "COMPLETED" else "", *kept)


def add_memory_logs(rows: list[dict], workdir: str | Path) -> list[dict]:
    """Complete sacct rows from their jobs' memory logs (the records written while the job ran):

    - the cgroup peak (`cgroup_peak_mb`, the counter the SLURM limit applies to) becomes the row's peak when
      it lies within the request (a larger one is not the job's own cgroup, e.g. a container's);
    - successful train/infer rows: the CUDA peak (the larger of it and sacct's gres/gpumem), or the flag
      `GPU unused` when the job held a GPU but ran without CUDA."""
    for row in rows:
        if row["source"] != "sacct" or (row["rule"] in MODEL_RULES and row["model"] is None):
            continue
        paths = memory_logs(workdir, row)
        if not paths:
            continue
        records = [r for path in paths for r in job_records(path, row.get("start"), row.get("end"))]
        if (cgroup := enforced_peak(records, row["req_mem_mb"])) is not None:
            _use_cgroup_peak(row, cgroup)
        if row["rule"] not in MODEL_RULES or row["state"] != "COMPLETED":
            continue
        peak = _largest(records, "cuda_peak_reserved_mb", "cuda_peak_mb")
        if peak is not None:
            row["gpu_peak_mb"] = round(max(peak, row["gpu_peak_mb"] or 0.0), 1)
        elif records and row["gpus"]:
            row["flag"] = _join(row["flag"], "GPU unused")
    return rows


def write_table(rows: list[dict], out_csv: str | Path, out_parquet: str | Path | None) -> None:
    """The rows as CSV (and parquet), with every column typed even when there are no rows."""
    rows = [{key: row.get(key) for key in SCHEMA} for row in rows]
    frame = pl.DataFrame(rows, schema=SCHEMA) if rows else pl.DataFrame(schema=SCHEMA)
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(out_csv)
    if out_parquet is not None:
        frame.write_parquet(out_parquet)
