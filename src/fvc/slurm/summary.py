"""The closing summary of a workflow run (the Snakefile's `onsuccess:`): each model's ensemble scores on the
test videos, where the audit and report are, and the audit's biggest memory recommendations."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from fvc.core.paths import Layout
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
