"""Audit of a workflow run's SLURM jobs (sacct, or the benchmark files; cgroup and GPU peaks also from the
jobs' memory logs): memory, time and CPU use, and right-sized mem_mb, runtime, cpus and vram_mb.

The latest run by default (`run`: another one, `all_runs`: every run), judged against the config that run
really used (`fvc.slurm.runs`).

Orchestration only: the jobs come from `jobs`, their rows from `rows`, the sizes from `recommend`, the
terminal table from `render`, the plot from `plots` and the ROC curves and metrics table from
`fvc.infer.report`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fvc.core.atomic import write_text
from fvc.core.config import load_config, validate_config
from fvc.core.memory import MemoryLog
from fvc.slurm.jobs import discover_jobs
from fvc.slurm.memory_keys import snakemake_overhead_mb
from fvc.slurm.plan import cached_predictions
from fvc.slurm.recommend import Recommendation, recommend, snippet
from fvc.slurm.rows import add_memory_logs, benchmark_rows, run_order, sacct_rows, select_run, write_table
from fvc.slurm.runs import run_record
from fvc.slurm.sacct import Job, SacctUnavailable, read_sacct

log = logging.getLogger(__name__)


@dataclass
class AuditResult:
    """What `audit_workflow` found and wrote."""

    rows: list[dict]
    recommendations: list[Recommendation]
    source: str  # sacct | benchmark
    message: str = ""
    runs: list[str] = field(default_factory=list)  # the audited runs (SLURM run ids), oldest first
    config_source: str = ""  # where the config the recommendations compare with came from


def audit_workflow(
    workdir: str | Path,
    out_csv: str | Path,
    out_parquet: str | Path | None = None,
    *,
    safety_factor: float,
    sacct: Callable[[Iterable[str]], dict[str, Job]] = read_sacct,
    config: str | Path | dict | None = None,
    plot: str | Path | None = None,
    snippet_path: str | Path | None = None,
    memory_log: str | Path | None = None,
    predictions: Mapping[str, str | Path] | None = None,
    roc_dir: str | Path | None = None,
    metrics_html: str | Path | None = None,
    train_metrics: Mapping[str, Sequence[str | Path]] | None = None,
    training_dir: str | Path | None = None,
    audit_html: str | Path | None = None,
    run: str | None = None,
    all_runs: bool = False,
    config_name: str = "the given config",
) -> AuditResult:
    """Audit every SLURM job of `workdir` (sacct; benchmark files when sacct is unreachable), write the
    table (CSV, parquet), the plot and the YAML snippet, and return rows and recommendations.

    With `predictions` (model -> infer's predictions.parquet, its metrics.json beside it), also the report
    material: `roc_dir/<model>.svg` ROC curves per fold and ensemble, and the `metrics_html` table; with
    `train_metrics` (model -> each fold's train metrics.json), `training_dir/<model>.svg` training curves;
    `audit_html`: the audit table as an HTML page.

    The jobs of the latest run (by job id) unless `run` names another (a run id or its unique prefix) or
    `all_runs`; the config is the selected run's record (`fvc.slurm.runs`), else `config` (a dict, named
    `config_name` in the result, or a file), else `workdir/config.yaml`."""
    mem = MemoryLog(memory_log, "audit")
    mem.mark("start")
    workdir = Path(workdir)
    refs = discover_jobs(workdir)
    message, source = "", "sacct"
    try:
        rows = sacct_rows(refs, sacct(list(refs))) if refs else []
        if not refs:
            message = f"no SLURM jobs recorded under {workdir / '.snakemake'}; using the benchmark files"
    except SacctUnavailable as exc:
        rows, message = [], f"{exc}; falling back to the benchmark files"
    if refs and not rows and not message:
        message = "sacct knows none of the recorded SLURM jobs; using the benchmark files"
    if rows and not all_runs:
        rows = select_run(rows, run)
    runs = run_order(rows) if rows else []
    config, config_source = _run_config(workdir, config, runs, config_name)
    if not rows:
        source, rows = "benchmark", benchmark_rows(workdir, config)
        message += f" (max_rss + {snakemake_overhead_mb(config)} MB Snakemake overhead)"
    if message:
        log.warning(message)
    rows = add_predictions(add_memory_logs(rows, workdir), cached_predictions(config, workdir))
    mem.mark("rows", jobs=len(rows), source=source)
    recs = recommend(rows, config, safety_factor)
    write_table(rows, out_csv, out_parquet)
    if plot is not None:
        from fvc.slurm.plots import plot_audit  # matplotlib only when plotting

        plot_audit(rows, recs, plot)
    if predictions:
        from fvc.infer.report import plot_roc, write_metrics_html

        for model, path in predictions.items():
            if roc_dir is not None:
                plot_roc(path, Path(roc_dir, f"{model}.svg"), model)
        if metrics_html is not None:
            metrics = {m: Path(p).with_name("metrics.json") for m, p in predictions.items()}
            write_metrics_html(metrics, metrics_html)
    if train_metrics and training_dir is not None:
        from fvc.infer.report import plot_training

        for model, paths in train_metrics.items():
            plot_training(paths, Path(training_dir, f"{model}.svg"), model)
    if audit_html is not None:
        from fvc.slurm.render import render_html

        write_text(audit_html, render_html(rows, recs))
    if snippet_path is not None:
        write_text(snippet_path, snippet(recs))
    mem.mark("end")
    return AuditResult(rows, recs, source, message, runs, config_source)


def add_predictions(rows: list[dict], predicted: Mapping[tuple[str, str | None], float]) -> list[dict]:
    """Each row's memory as `fvc plan` predicted it (MB, Snakemake's overhead included), where cached."""
    for row in rows:
        row["predicted_mb"] = predicted.get((row["rule"], row["model"]))
    return rows


def _run_config(
    workdir: Path, config: str | Path | dict | None, runs: list[str], config_name: str
) -> tuple[dict, str]:
    """The config of the audited run (its record, when one run is audited and it has one), else `config`,
    else workdir/config.yaml; and where it came from."""
    record = run_record(workdir, runs[0]) if len(runs) == 1 else None
    if record is not None:
        path, content = record
        files = ", ".join(content.get("configfiles") or []) or "no config file"
        config = validate_config(content["config"], str(path))
        return config, f"{path} (the run's merged config: {files}, --config overrides)"
    if isinstance(config, dict):
        return config, config_name
    path = workdir / "config.yaml" if config is None else Path(config)
    return load_config(path), str(path)
