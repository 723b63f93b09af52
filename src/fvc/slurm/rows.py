"""Per-job audit rows (requested vs used memory, time, CPU, GPUs held and their peak memory) from sacct's
records or Snakemake's benchmark files, completed by the jobs' memory logs (CUDA peaks), and the table they
are written to."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import polars as pl

from fvc.slurm.jobs import JobRef, id_order, parse_comment, split_wildcards
from fvc.slurm.memory_keys import configured_mem_mb, snakemake_overhead_mb
from fvc.slurm.sacct import MB, Job

log = logging.getLogger(__name__)

LOW, HIGH = 60.0, 90.0
#: A GPU busier than this (sacct's gres/gpuutil peak, %) at no point of the job is flagged idle.
GPU_IDLE = 20.0
BENCHMARKS = Path("logs", "benchmarks")
#: The memory log of each rule sized per model (rules/train.smk, rules/infer.smk `log: memory=`).
MEMORY_LOGS = {
    "train": "logs/train/{model}/fold{fold}.memory.jsonl",
    "infer": "logs/infer/{model}.memory.jsonl",
}
SCHEMA = {
    "job_id": pl.String, "run": pl.String, "rule": pl.String, "wildcards": pl.String, "model": pl.String,
    "fold": pl.Int64, "attempt": pl.Int64, "state": pl.String, "req_mem_mb": pl.Float64,
    "peak_mem_mb": pl.Float64, "mem_eff": pl.Float64, "elapsed_s": pl.Float64, "cpu_eff": pl.Float64,
    "gpus": pl.Int64, "gpu_peak_mb": pl.Float64, "gpu_util": pl.Float64, "source": pl.String,
    "flag": pl.String,
}  # fmt: skip


def _flag(state: str, eff: float | None) -> str:
    if state == "OUT_OF_MEMORY":
        return "OOM"
    if eff is None:
        return ""
    return f">{HIGH:.0f}% used" if eff > HIGH else f"<{LOW:.0f}% used" if eff < LOW else ""


def _gpu_flag(gpus: int, util: float | None) -> str:
    return f"GPU idle (<{GPU_IDLE:.0f}% used)" if gpus and util is not None and util < GPU_IDLE else ""


def _join(*flags: str) -> str:
    return "; ".join(flag for flag in flags if flag)


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / MB, 1)


def _number_attempts(rows: list[dict]) -> list[dict]:
    """Attempt = order of submission among jobs of the same rule and wildcards (job ids grow with time)."""
    rows.sort(key=lambda r: (r["rule"], r["wildcards"], id_order(r["job_id"])))
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row["rule"], row["wildcards"])
        counts[key] = row["attempt"] = counts.get(key, 0) + 1
    return rows


def job_row(ref: JobRef, job: Job) -> dict:
    """One audit row from a job's sacct records."""
    alloc = job.allocation
    req, peak = job.req_mem, job.max_rss
    eff = round(100 * peak / req, 1) if req and peak is not None else None
    cpu_eff = None
    if alloc is not None and alloc.elapsed_s and alloc.total_cpu_s is not None:
        cpu_eff = round(100 * alloc.total_cpu_s / (alloc.elapsed_s * alloc.alloc_cpus), 1)
    rule, wildcards = ref.rule, ref.wildcards
    if alloc is not None and (parsed := parse_comment(alloc.comment)):
        rule, wildcards = parsed
    model, fold = split_wildcards(wildcards)
    state = job.state
    return {
        "job_id": ref.job_id,
        "run": alloc.name if alloc is not None else "",
        "rule": rule,
        "wildcards": wildcards,
        "model": model,
        "fold": fold,
        "attempt": 0,
        "state": state,
        "req_mem_mb": _mb(req),
        "peak_mem_mb": _mb(peak),
        "mem_eff": eff,
        "elapsed_s": alloc.elapsed_s if alloc is not None else None,
        "cpu_eff": cpu_eff,
        "gpus": job.gpus,
        "gpu_peak_mb": _mb(job.gpu_mem),
        "gpu_util": job.gpu_util,
        "source": "sacct",
        "flag": _join(_flag(state, eff), _gpu_flag(job.gpus, job.gpu_util)),
    }


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
        wildcards = "" if wildcards == rule else re.sub(r"(^|_)fold(\d+)$", r"\g<1>\g<2>", wildcards)
        try:
            table = pl.read_csv(tsv, separator="\t", null_values=["NA", "-"])
        except Exception as exc:  # noqa: BLE001 - a broken file is reported and skipped
            log.warning("%s: unreadable benchmark file (%s); skipped", tsv, exc)
            continue
        rss = _column_max(table, "max_rss")
        if rss is None:
            log.warning("%s: no max_rss value; skipped", tsv)
            continue
        model, fold = split_wildcards(wildcards)
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
                "attempt": table.height,
                "state": "COMPLETED",
                "req_mem_mb": None if req is None else float(req),
                "peak_mem_mb": peak,
                "mem_eff": eff,
                "elapsed_s": seconds,
                "cpu_eff": round(100 * cpu / seconds, 1) if cpu is not None and seconds else None,
                "gpus": config["models"].get(model, {}).get("gpus", 0) if model else 0,
                "gpu_peak_mb": None,
                "gpu_util": None,
                "source": "benchmark",
                "flag": _flag("COMPLETED", eff),
            }
        )
    return rows


def _cuda_peak(path: Path) -> tuple[bool, float | None]:
    """Whether a memory log has records, and its largest CUDA peak (reserved, else allocated) in MB."""
    peaks, records = [], False
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        records = True
        peak = record.get("cuda_peak_reserved_mb", record.get("cuda_peak_mb"))
        if peak is not None:
            peaks.append(float(peak))
    return records, max(peaks) if peaks else None


def add_memory_log_gpu(rows: list[dict], workdir: str | Path) -> list[dict]:
    """Complete the successful train/infer rows from their memory logs: the CUDA peak (the larger of it and
    sacct's gres/gpumem), or the flag `GPU unused` when the job held a GPU but ran without CUDA."""
    for row in rows:
        pattern = MEMORY_LOGS.get(row["rule"])
        if pattern is None or row["model"] is None or row["state"] != "COMPLETED":
            continue
        path = Path(workdir, pattern.format(model=row["model"], fold=row["fold"]))
        if not path.is_file():
            continue
        logged, peak = _cuda_peak(path)
        if peak is not None:
            row["gpu_peak_mb"] = round(max(peak, row["gpu_peak_mb"] or 0.0), 1)
        elif logged and row["gpus"]:
            row["flag"] = _join(row["flag"], "GPU unused")
    return rows


def write_table(rows: list[dict], out_csv: str | Path, out_parquet: str | Path | None) -> None:
    """The rows as CSV (and parquet), with every column typed even when there are no rows."""
    frame = pl.DataFrame(rows, schema=SCHEMA) if rows else pl.DataFrame(schema=SCHEMA)
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(out_csv)
    if out_parquet is not None:
        frame.write_parquet(out_parquet)
