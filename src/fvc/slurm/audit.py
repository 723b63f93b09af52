"""Memory audit of a workflow's SLURM jobs (sacct, or the benchmark files) and right-sized mem_mb.

Jobs are found from what snakemake-executor-plugin-slurm leaves in the workflow directory: its job logs
`.snakemake/slurm_logs/rule_<rule>/<wildcards>/<jobid>.log` (kept for failed jobs, and for all jobs with
`slurm-keep-successful-logs`) and the "submitted with SLURM jobid" lines of every run's
`.snakemake/log/*.snakemake.log`. One sacct call then returns every step of every job."""

from __future__ import annotations

import difflib
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import yaml

from fvc.core.atomic import atomic_path
from fvc.core.config import MODEL_NAMES, load_config
from fvc.core.memory import MemoryLog
from fvc.slurm.sacct import MB, Job, SacctUnavailable, read_sacct

log = logging.getLogger(__name__)

#: Memory every job carries besides its rule: the job-step snakemake processes (~260 MB measured).
JOB_OVERHEAD_MB = 300
ROUND_MB = 100
LOW, HIGH = 60.0, 90.0
BENCHMARKS = Path("logs", "benchmarks")
SUBMIT_RE = re.compile(r"submitted with SLURM jobid (?P<id>[\w.+]+) \(log: (?P<log>.+?)\)\.?\s*$")
#: Which config number sizes each rule's memory: (table, key); the row is the model for train/infer.
MODEL_KEYS = {"train": "mem_mb", "infer": "infer_mem_mb"}
SCHEMA = {
    "job_id": pl.String, "run": pl.String, "rule": pl.String, "wildcards": pl.String, "model": pl.String,
    "fold": pl.Int64, "attempt": pl.Int64, "state": pl.String, "req_mem_mb": pl.Float64,
    "peak_mem_mb": pl.Float64, "mem_eff": pl.Float64, "elapsed_s": pl.Float64, "cpu_eff": pl.Float64,
    "source": pl.String, "flag": pl.String,
}  # fmt: skip


@dataclass(frozen=True)
class JobRef:
    """A SLURM job the workflow submitted, as the plugin's files name it."""

    job_id: str
    rule: str
    wildcards: str


@dataclass(frozen=True)
class Recommendation:
    """Right-sized memory for one config number (`models.<model>.<key>` or `resources.<rule>.mem_mb`)."""

    table: str
    row: str
    key: str
    current: int | None
    recommended: int
    action: str  # lower | raise | keep | raise-oom
    reason: str


@dataclass
class AuditResult:
    """What `audit_workflow` found and wrote."""

    rows: list[dict]
    recommendations: list[Recommendation]
    source: str  # sacct | benchmark
    message: str = ""


def _ref_from_log_path(path: Path, job_id: str) -> JobRef | None:
    """Rule and wildcards from `.../slurm_logs/rule_<rule>[/<wildcards>]/<jobid>.log`."""
    parts = path.parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i].startswith("rule_"):
            wildcards = "_".join(parts[i + 1 : -1])
            return JobRef(job_id, parts[i][len("rule_") :], wildcards)
    return None


def parse_comment(comment: str) -> tuple[str, str] | None:
    """(rule, wildcards) from the plugin's job comment `rule_<rule>[_wildcards_<values joined by _>]`."""
    if not comment.startswith("rule_"):
        return None
    rule, _, wildcards = comment[len("rule_") :].partition("_wildcards_")
    return rule, wildcards


def discover_jobs(workdir: str | Path) -> dict[str, JobRef]:
    """Every SLURM job of this workflow directory over all its runs, by job id."""
    workdir = Path(workdir)
    refs: dict[str, JobRef] = {}
    for logfile in sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log")):
        for line in logfile.read_text(errors="replace").splitlines():
            match = SUBMIT_RE.search(line)
            if match and (ref := _ref_from_log_path(Path(match["log"]), match["id"])):
                refs[ref.job_id] = ref
    for logfile in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log")):
        job_id = logfile.stem
        if re.fullmatch(r"\d+(_\d+)?", job_id) and (ref := _ref_from_log_path(logfile, job_id)):
            refs.setdefault(job_id, ref)
    return refs


def split_wildcards(wildcards: str) -> tuple[str | None, int | None]:
    """(model, fold) from the plugin's wildcard string, e.g. `naive_cnn_0` -> ('naive_cnn', 0)."""
    model = next(
        (
            m
            for m in sorted(MODEL_NAMES, key=len, reverse=True)
            if wildcards == m or wildcards.startswith(m + "_")
        ),
        None,
    )
    if model is None:
        return None, None
    rest = wildcards[len(model) + 1 :]
    return model, int(rest) if rest.isdigit() else None


def _flag(state: str, eff: float | None) -> str:
    if state == "OUT_OF_MEMORY":
        return "OOM"
    if eff is None:
        return ""
    return f">{HIGH:.0f}% used" if eff > HIGH else f"<{LOW:.0f}% used" if eff < LOW else ""


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / MB, 1)


def _number_attempts(rows: list[dict]) -> list[dict]:
    """Attempt = order of submission among jobs of the same rule and wildcards (job ids grow with time)."""
    rows.sort(key=lambda r: (r["rule"], r["wildcards"], _id_order(r["job_id"])))
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row["rule"], row["wildcards"])
        counts[key] = row["attempt"] = counts.get(key, 0) + 1
    return rows


def _id_order(job_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", job_id))


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
        "source": "sacct",
        "flag": _flag(state, eff),
    }


def sacct_rows(refs: dict[str, JobRef], jobs: dict[str, Job]) -> list[dict]:
    """Audit rows of the jobs sacct knows (a job id it has forgotten is logged and skipped)."""
    missing = sorted(set(refs) - set(jobs), key=_id_order)
    if missing:
        log.warning("sacct has no record of jobs %s (purged from accounting, or another cluster)", missing)
    return _number_attempts([job_row(ref, jobs[job_id]) for job_id, ref in refs.items() if job_id in jobs])


def configured_mem_mb(config: dict, rule: str, model: str | None) -> int | None:
    """The first-attempt mem_mb the config asks for this rule (and model)."""
    if rule in MODEL_KEYS and model is not None:
        return config.get("models", {}).get(model, {}).get(MODEL_KEYS[rule])
    return config.get("resources", {}).get(rule, {}).get("mem_mb")


def benchmark_rows(workdir: str | Path, config: dict) -> list[dict]:
    """Rows from Snakemake's `logs/benchmarks/<rule>/<wildcards>.tsv` (max_rss in MiB, plus the per-job
    overhead) with the config's first-attempt request: the fallback when sacct cannot be asked."""
    rows = []
    root = Path(workdir, BENCHMARKS)
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
        if table.height == 0 or "max_rss" not in table.columns:
            log.warning("%s: no max_rss column; skipped", tsv)
            continue
        model, fold = split_wildcards(wildcards)
        req = configured_mem_mb(config, rule, model)
        peak = round(float(table["max_rss"].max()) + JOB_OVERHEAD_MB, 1)  # type: ignore[arg-type]
        eff = round(100 * peak / req, 1) if req else None
        cpu = table["cpu_time"].max() if "cpu_time" in table.columns else None
        seconds = float(table["s"].max())  # type: ignore[arg-type]
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
                "cpu_eff": round(100 * float(cpu) / seconds, 1) if cpu is not None and seconds else None,  # type: ignore[arg-type]
                "source": "benchmark",
                "flag": _flag("COMPLETED", eff),
            }
        )
    return rows


def _round_up(value: float) -> int:
    return int(math.ceil(value / ROUND_MB) * ROUND_MB)


def recommend(rows: Iterable[dict], config: dict, safety_factor: float = 1.2) -> list[Recommendation]:
    """Per rule (and per model for train/infer): peak over successful jobs x safety factor, rounded up to
    100 MB and never below the per-job overhead; rules that only ran out of memory get last request x
    memory_growth."""
    groups: dict[tuple[str, str | None], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["rule"], row["model"]), []).append(row)
    growth = config.get("memory_growth", 1.5)
    recs = []
    for (rule, model), members in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        if rule in MODEL_KEYS:
            if model is None:
                continue
            table, row_name, key = "models", model, MODEL_KEYS[rule]
        elif rule in config.get("resources", {}):
            table, row_name, key = "resources", rule, "mem_mb"
        else:
            continue
        current = configured_mem_mb(config, rule, model)
        ok = [r["peak_mem_mb"] for r in members if r["state"] == "COMPLETED" and r["peak_mem_mb"] is not None]
        ooms = [r for r in members if r["state"] == "OUT_OF_MEMORY" and r["req_mem_mb"]]
        if ok:
            peak = max(ok)
            value = max(_round_up(peak * safety_factor), _round_up(JOB_OVERHEAD_MB))
            action = "keep" if value == current else "lower" if current and value < current else "raise"
            reason = f"{rule}: peak {peak:.0f} MB over {len(ok)} successful job(s) x {safety_factor}"
            worst = max((r["req_mem_mb"] for r in ooms), default=0)
            if worst >= value:  # another job of this group ran out of memory at least this high
                value, action = _round_up(worst * growth), "raise"
                reason += f", but out of memory at {worst:.0f} MB: x{growth}"
        elif ooms:
            last = max(ooms, key=lambda r: _id_order(r["job_id"]))
            value, action = _round_up(last["req_mem_mb"] * growth), "raise-oom"
            reason = (
                f"{rule}: no successful job; out of memory at {last['req_mem_mb']:.0f} MB "
                f"(job {last['job_id']}): raise to x{growth}"
            )
        else:
            continue
        recs.append(Recommendation(table, row_name, key, current, value, action, reason))
    return recs


def snippet(recs: Iterable[Recommendation]) -> str:
    """The recommendations as YAML in the shape of config.yaml's `models:` and `resources:` tables."""
    tables: dict[str, dict[str, dict[str, int]]] = {}
    reasons: dict[tuple[str, str], list[str]] = {}
    for rec in recs:
        tables.setdefault(rec.table, {}).setdefault(rec.row, {})[rec.key] = rec.recommended
        reasons.setdefault((rec.table, rec.row), []).append(f"{rec.action}: {rec.reason}")
    lines = ["# fvc audit: right-sized memory (MB); `fvc audit --apply` writes these into config.yaml"]
    for table in ("models", "resources"):
        if table not in tables:
            continue
        lines.append(f"{table}:")
        for row, values in tables[table].items():
            inner = ", ".join(f"{k}: {v}" for k, v in values.items())
            lines.append(f"  {row}: {{{inner}}}  # {'; '.join(reasons[(table, row)])}")
    return "\n".join(lines) + "\n"


def _block_end(lines: list[str], start: int, indent: int, stop: int) -> int:
    """Index of the first line after `start` (up to `stop`) that is indented no deeper than `indent`."""
    for i in range(start + 1, stop):
        stripped = lines[i].lstrip()
        if stripped and not stripped.startswith("#") and len(lines[i]) - len(stripped) <= indent:
            return i
    return stop


def edit_config_text(text: str, recs: Iterable[Recommendation], source: str = "config.yaml") -> str:
    """config.yaml's text with the recommended numbers written in place; comments and layout kept."""
    recs = list(recs)
    lines = text.splitlines(keepends=True)
    for rec in recs:
        top = next((i for i, line in enumerate(lines) if re.match(rf"{rec.table}:\s*(#.*)?$", line)), None)
        if top is None:
            raise ValueError(f"{source}: no top-level `{rec.table}:` table")
        end = _block_end(lines, top, 0, len(lines))
        row = next(
            (i for i in range(top + 1, end) if re.match(rf"\s+{re.escape(rec.row)}\s*:", lines[i])), None
        )
        if row is None:
            raise ValueError(f"{source}: `{rec.table}` has no row `{rec.row}`")
        row_indent = len(lines[row]) - len(lines[row].lstrip())
        row_end = _block_end(lines, row, row_indent, end)
        block = "".join(lines[row:row_end])
        new_block, count = re.subn(
            rf"(?<![\w-])({re.escape(rec.key)}\s*:\s*)\d+", rf"\g<1>{rec.recommended}", block
        )
        if count != 1:
            raise ValueError(
                f"{source}: `{rec.table}.{rec.row}` has {count} `{rec.key}:` numbers, expected 1"
            )
        lines[row:row_end] = new_block.splitlines(keepends=True)
    new_text = "".join(lines)
    new = yaml.safe_load(new_text)
    for rec in recs:
        if new[rec.table][rec.row][rec.key] != rec.recommended:
            raise ValueError(f"{source}: editing {rec.table}.{rec.row}.{rec.key} failed")
    return new_text


def apply_recommendations(config_path: str | Path, recs: list[Recommendation]) -> str:
    """Write the recommendations into the config file (validated first, atomically); return the diff."""
    path = Path(config_path)
    old = path.read_text()
    new = edit_config_text(old, [r for r in recs if r.action != "keep"], str(path))
    if new == old:
        return ""
    with atomic_path(path) as tmp:
        tmp.write_text(new)
        load_config(tmp)
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), str(path), str(path)))


def _fmt(value: float | int | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def render_table(rows: list[dict], recs: list[Recommendation]) -> str:
    """The audit as a terminal table, then the recommendations."""
    head = (
        "job",
        "rule",
        "wildcards",
        "att",
        "state",
        "req MB",
        "peak MB",
        "mem %",
        "elapsed",
        "cpu %",
        "flag",
    )
    body = [
        (
            r["job_id"] or r["source"],
            r["rule"],
            r["wildcards"] or "-",
            str(r["attempt"]),
            r["state"],
            _fmt(r["req_mem_mb"]),
            _fmt(r["peak_mem_mb"]),
            _fmt(r["mem_eff"], ".1f"),
            _hms(r["elapsed_s"]),
            _fmt(r["cpu_eff"], ".1f"),
            r["flag"],
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    numeric = {3, 5, 6, 7, 8, 9}

    def line(cells: tuple) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(head), line(tuple("-" * w for w in widths)), *map(line, body)]
    if recs:
        out += ["", "recommended memory (MB):"]
        out += [
            f"  {r.table}.{r.row}.{r.key}: {_fmt(r.current)} -> {r.recommended}  [{r.action}] {r.reason}"
            for r in recs
        ]
    return "\n".join(out)


def _write_table(rows: list[dict], out_csv: str | Path, out_parquet: str | Path | None) -> None:
    frame = pl.DataFrame(rows, schema=SCHEMA) if rows else pl.DataFrame(schema=SCHEMA)
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(out_csv)
    if out_parquet is not None:
        frame.write_parquet(out_parquet)


def audit_workflow(
    workdir: str | Path,
    out_csv: str | Path,
    out_parquet: str | Path | None = None,
    safety_factor: float = 1.2,
    sacct: Callable[[Iterable[str]], dict[str, Job]] = read_sacct,
    config: str | Path | dict | None = None,
    plot: str | Path | None = None,
    snippet_path: str | Path | None = None,
    memory_log: str | Path | None = None,
    predictions: Mapping[str, str | Path] | None = None,
    roc_dir: str | Path | None = None,
    metrics_html: str | Path | None = None,
) -> AuditResult:
    """Audit every SLURM job of `workdir` (sacct; benchmark files when sacct is unreachable), write the
    table (CSV, parquet), the plot and the YAML snippet, and return rows and recommendations.

    With `predictions` (model -> infer's predictions.parquet, its metrics.json beside it), also the report
    material: `roc_dir/<model>.svg` ROC curves per fold and ensemble, and the `metrics_html` table."""
    mem = MemoryLog(memory_log, "audit")
    mem.mark("start")
    workdir = Path(workdir)
    if config is None:
        config = workdir / "config.yaml"
    config = config if isinstance(config, dict) else load_config(config)
    refs = discover_jobs(workdir)
    message, source = "", "sacct"
    try:
        rows = sacct_rows(refs, sacct(list(refs))) if refs else []
        if not refs:
            message = f"no SLURM jobs recorded under {workdir / '.snakemake'}; using the benchmark files"
    except SacctUnavailable as exc:
        rows, message = (
            [],
            f"{exc}; falling back to the benchmark files (max_rss + {JOB_OVERHEAD_MB} MB overhead)",
        )
    if refs and not rows and not message:
        message = "sacct knows none of the recorded SLURM jobs; using the benchmark files"
    if not rows:
        source, rows = "benchmark", benchmark_rows(workdir, config)
    if message:
        log.warning(message)
    mem.mark("rows", jobs=len(rows), source=source)
    recs = recommend(rows, config, safety_factor)
    _write_table(rows, out_csv, out_parquet)
    if plot is not None or predictions:
        from fvc.slurm import plots as audit_plot  # matplotlib only when plotting

        if plot is not None:
            audit_plot.plot_audit(rows, recs, plot)
        for model, path in (predictions or {}).items():
            if roc_dir is not None:
                audit_plot.plot_roc(path, Path(roc_dir, f"{model}.svg"), model)
        if predictions and metrics_html is not None:
            audit_plot.write_metrics_html(
                {m: Path(p).with_name("metrics.json") for m, p in predictions.items()}, metrics_html
            )
    if snippet_path is not None:
        Path(snippet_path).write_text(snippet(recs))
    mem.mark("end")
    return AuditResult(rows, recs, source, message)
