"""The closing summary of a workflow run (the Snakefile's `onsuccess:`): each model's ensemble scores on the
test videos, where the audit and report are, and the audit's biggest memory recommendations; and of a failed
run (`onerror:`): each failed job with its cause."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from fvc.core.paths import Layout
from fvc.slurm.causes import Cause, failure_cause
from fvc.slurm.recommend import Recommendation, recommend

TOP_RECOMMENDATIONS = 3


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def model_lines(layout: Layout, models: list[str]) -> list[str]:
    """One line per model: its fold ensemble's AUC and accuracy, the test videos (groups) they rest on, and
    the AUC from the centre clip alone beside that of K clips per video."""
    lines = []
    width = max(map(len, models), default=0)
    for model in models:
        path = layout.infer(model).metrics
        if not path.exists():
            lines.append(f"  {model:<{width}}  no metrics yet ({path})")
            continue
        metrics = json.loads(path.read_text())
        ensemble = metrics["ensemble"]
        groups = f" in {metrics['groups']} groups" if "groups" in metrics else ""
        lines.append(
            f"  {model:<{width}}  AUC {_num(ensemble['auc'])}  accuracy {_num(ensemble['accuracy'])}"
            f"  on {metrics['videos']} test videos{groups}{_clip_aucs(metrics)}"
        )
    return lines


def _clip_aucs(metrics: dict) -> str:
    """'  (AUC 0.81 at K = 1 clip, 0.88 at K = 5 clips per video)' from metrics.json's clips_per_video."""
    by_k = metrics.get("clips_per_video", {})
    if len(by_k) < 2:
        return ""
    parts = [f"{_num(m['auc'])} at K = {k} clip{'s' if k != '1' else ''}" for k, m in by_k.items()]
    return f"  (AUC {', '.join(parts)} per video)"


def biggest(recs: list[Recommendation], top: int = TOP_RECOMMENDATIONS) -> list[Recommendation]:
    """The `top` recommendations that change memory most (out-of-memory raises first), `keep`s left out."""
    changes = [r for r in recs if r.action != "keep" and r.key.endswith("_mb")]
    changes.sort(key=lambda r: (r.action != "raise-oom", -abs(r.recommended - (r.current or 0))))
    return changes[:top]


def audit_lines(layout: Layout, config: dict) -> list[str]:
    """Where the audit is, and its biggest recommendations."""
    files = layout.audit
    if not files.parquet.exists():
        return []
    rows = pl.read_parquet(files.parquet).to_dicts()
    flagged = sum(1 for r in rows if r["flag"])
    lines = [f"memory audit: {files.csv} ({len(rows)} jobs, {flagged} flagged; plot {files.plot})"]
    top = biggest(recommend(rows, config, config["audit"]["safety_factor"]))
    if top:
        lines.append("  biggest recommendations (`fvc audit --apply` writes them into config.yaml):")
        lines += [
            f"    {r.table}.{r.row}.{r.key}: {'-' if r.current is None else r.current} -> {r.recommended}"
            f" MB  [{r.action}]"
            for r in top
        ]
    return lines


def run_summary(config: dict) -> str:
    """The summary of a finished run of the workflow with `config` (read from the results folder)."""
    layout = Layout(config["results_dir"])
    models = list(config["train"]["models"])
    lines = ["", "fvc: fold ensembles on the held-out test videos"]
    lines += model_lines(layout, models)
    lines.append(f"predictions and all metrics: {Path(config['results_dir'], 'infer')}/<model>/")
    lines += audit_lines(layout, config)
    lines.append(
        "report (ROC and training curves, metrics, memory audit): add `--report report.html` to the command"
    )
    return "\n".join(lines) + "\n"


# Snakemake's report of one failed job: "Error in rule <rule>:", then its fields indented by 4 spaces (a
# field's value may run on over further lines, e.g. sbatch's own error and the sbatch call), up to the next
# line of Snakemake's own.
ERROR_START = re.compile(r"^Error in rule (?P<rule>\w+):$", re.M)
BLOCK_END = re.compile(
    r"^(?:\[|Error in rule|Trying to restart|Exiting because|Shutting down|Select jobs|Complete log|Job \d"
    r"|Efficiency report|Finished jobid|\d+ of \d+ steps)",
    re.M,
)
FIELD = re.compile(r"^    (?P<key>\w+): ", re.M)
# Rule and wildcards as the plugin names a job: its SLURM log's folder or its sbatch comment.
SLURM_LOG_PATH = re.compile(
    r"slurm_logs/rule_(?P<rule>\w+?)/(?:(?P<wildcards>[^/]+)/)?(?P<job>\d+(?:_\d+)?)\.log"
)
COMMENT = re.compile(r"--comment '?rule_(?P<rule>\w+?)(?:_wildcards_(?P<wildcards>\S+?))?'?\s")


@dataclass(frozen=True)
class FailedJob:
    """One failed attempt of a job, as Snakemake's log reports it, and its cause (fvc.slurm.causes)."""

    rule: str
    wildcards: str
    slurm_job_id: str | None
    cause: Cause


def _fields(block: str) -> dict[str, str]:
    """An error report's fields: `message`, `jobid`, `log`, `external_jobid`, ..."""
    starts = list(FIELD.finditer(block))
    return {
        m["key"]: block[m.end() : starts[i + 1].start() if i + 1 < len(starts) else len(block)].strip()
        for i, m in enumerate(starts)
    }


def _log_files(value: str) -> list[str]:
    """The files of a `log:` field (`a.log, .snakemake/slurm_logs/... (check log file(s) ...)`)."""
    value = value.split(" (check log file", 1)[0]
    return [part.strip() for part in value.split(",") if part.strip()]


def _wildcards(fields: dict[str, str], slurm_log: str | None) -> str:
    named = SLURM_LOG_PATH.search(slurm_log or "") or COMMENT.search(fields.get("message", ""))
    return (named["wildcards"] or "") if named else ""


def task_log(path: Path) -> Path:
    """The SLURM log of a job as it lies on disk: an array task's (`rule_<rule>/<wildcards>/<job>_<task>.log`,
    as the plugin names it) is `rule_<rule>/<job>_<task>.log` (sbatch --output of the whole array)."""
    if path.exists() or "_" not in path.stem or not path.parent.parent.name.startswith("rule_"):
        return path
    return path.parent.parent / path.name


def failed_jobs(snakemake_log: str, workdir: Path = Path()) -> list[FailedJob]:
    """Every failed attempt in the text of a Snakemake log, with the cause read from its SLURM log and fvc's
    log (relative paths are taken from `workdir`)."""
    failed = []
    for start in ERROR_START.finditer(snakemake_log):
        end = BLOCK_END.search(snakemake_log, start.end())
        fields = _fields(snakemake_log[start.end() + 1 : end.start() if end else len(snakemake_log)])
        logs = _log_files(fields.get("log", ""))
        slurm_log = next((f for f in logs if SLURM_LOG_PATH.search(f)), None)
        fvc_log = next((f for f in logs if f.endswith(".log") and f != slurm_log), None)
        job_id = fields.get("external_jobid") or None
        cause = failure_cause(
            message=fields.get("message", ""),
            slurm_log=task_log(workdir / slurm_log) if slurm_log else None,
            fvc_log=workdir / fvc_log if fvc_log else None,
            slurm_job_id=job_id,
        )
        failed.append(FailedJob(start["rule"], _wildcards(fields, slurm_log), job_id, cause))
    return failed


def failure_summary(log: str | Path | list[str] | None, workdir: Path = Path()) -> str:
    """The Snakefile's `onerror:` lines from the run's Snakemake log (`log`, or the list of log files that
    Snakemake hands `onerror:`): one per failed attempt naming its job and cause, and what to do about a stale
    lock."""
    paths = [Path(p) for p in ([log] if isinstance(log, (str, Path)) else log or [])]
    text = "".join(p.read_text(errors="replace") for p in paths if p.is_file())
    lines = ["", "fvc: failed jobs and their causes (read from their SLURM and fvc logs)"]
    for job in failed_jobs(text, workdir):
        where = f" ({job.wildcards})" if job.wildcards else ""
        slurm = f" SLURM job {job.slurm_job_id}" if job.slurm_job_id else ""
        lines.append(f"  {job.rule}{where}{slurm}: {job.cause}")
    if len(lines) == 2:
        lines.append("  none found in the Snakemake log (see it above)")
    lines.append(
        f"After a killed run (its lock stops the next one with `LockException`): {STALE_LOCK_ADVICE}."
    )
    return "\n".join(lines) + "\n"


STALE_LOCK_ADVICE = (
    "check `squeue --me` for jobs of a killed run still running (named fvc_<run id>; wait for them or"
    " scancel them), then run `snakemake --unlock` once and the same command again"
)


def stale_lock_hint(workdir: Path = Path()) -> str | None:
    """What to do when `workdir` holds Snakemake's locks as a run starts (printed by the Snakefile before
    Snakemake refuses with `LockException`): None when there are none."""
    locks = workdir / ".snakemake" / "locks"
    if not locks.is_dir() or not any(locks.iterdir()):
        return None
    return (
        f"fvc: {locks} holds another snakemake's locks. If no snakemake runs in this folder:"
        f" {STALE_LOCK_ADVICE}."
    )
