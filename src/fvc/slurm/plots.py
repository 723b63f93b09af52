"""Report material of the audit rule: memory requested vs used, ROC curves per model and fold, metrics."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the file-only backend
import polars as pl  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

if TYPE_CHECKING:
    from fvc.slurm.audit import Recommendation


def plot_audit(rows: list[dict], recs: Iterable[Recommendation], out: str | Path) -> None:
    """Requested vs used memory per rule/model (PNG or SVG by the file's suffix)."""
    groups: dict[str, dict] = {}
    for r in rows:
        label = r["rule"] if r["model"] is None else f"{r['rule']}:{r['model']}"
        g = groups.setdefault(label, {"req": 0.0, "peak": 0.0, "oom": False})
        g["req"] = max(g["req"], r["req_mem_mb"] or 0.0)
        g["peak"] = max(g["peak"], r["peak_mem_mb"] or 0.0)
        g["oom"] |= r["state"] == "OUT_OF_MEMORY"
    rec_by_label = {
        (
            f"{'train' if r.key == 'mem_mb' else 'infer'}:{r.row}" if r.table == "models" else r.row
        ): r.recommended
        for r in recs
    }
    labels = sorted(groups)
    y = range(len(labels))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.5))
    ax.barh(
        [i + 0.2 for i in y],
        [groups[k]["req"] for k in labels],
        height=0.4,
        label="requested (max)",
        color="#9ecae1",
    )
    ax.barh(
        [i - 0.2 for i in y],
        [groups[k]["peak"] for k in labels],
        height=0.4,
        label="peak used (max)",
        color=["#d62728" if groups[k]["oom"] else "#3182bd" for k in labels],
    )
    recommended = [(i, rec_by_label[k]) for i, k in enumerate(labels) if k in rec_by_label]
    if recommended:
        ax.scatter(
            [v for _, v in recommended],
            [i for i, _ in recommended],
            marker="|",
            s=300,
            color="black",
            label="recommended",
            zorder=3,
        )
    ax.set_yticks(list(y), labels)
    ax.set_xlabel("memory (MB)")
    ax.set_title("Requested vs used memory per rule/model (red: out of memory)")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def plot_roc(predictions: str | Path, out: str | Path, model: str) -> None:
    """ROC curves of one model's folds and of their ensemble from infer's per-video predictions."""
    table = pl.read_parquet(predictions)
    labels = table["label"].to_numpy()
    columns = [c for c in table.columns if c.startswith("prob_fold")] + ["prob_ensemble"]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for column in columns:
        name = column.removeprefix("prob_").replace("fold", "fold ")
        if len(set(labels.tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, table[column].to_numpy())
        ensemble = column == "prob_ensemble"
        ax.plot(fpr, tpr, label=name, linewidth=2.5 if ensemble else 1.2, color="black" if ensemble else None)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"{model}: ROC on the held-out test videos")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def metrics_table(metrics: Mapping[str, str | Path]) -> pl.DataFrame:
    """One row per model and fold (and the ensemble) from infer's metrics.json files."""
    rows = []
    for model, path in metrics.items():
        data = json.loads(Path(path).read_text())
        for fold in data["folds"]:
            rows.append({"model": model, "fold": str(fold["fold"]), **_scores(fold)})
        rows.append({"model": model, "fold": "ensemble", **_scores(data["ensemble"])})
    return pl.DataFrame(
        rows,
        schema={
            "model": pl.String,
            "fold": pl.String,
            "auc": pl.Float64,
            "accuracy": pl.Float64,
            "f1": pl.Float64,
        },
    )


def _scores(entry: dict) -> dict:
    return {key: entry.get(key) for key in ("auc", "accuracy", "f1")}


def write_metrics_html(metrics: Mapping[str, str | Path], out: str | Path) -> pl.DataFrame:
    """The metrics table as a small HTML page for `snakemake --report`; returns the table."""
    table = metrics_table(metrics)
    cells = "".join(
        "<tr>"
        + "".join(
            f"<td>{'-' if v is None else html.escape(f'{v:.3f}' if isinstance(v, float) else v)}</td>"
            for v in row
        )
        + "</tr>"
        for row in table.iter_rows()
    )
    head = "".join(f"<th>{name}</th>" for name in table.columns)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>fvc metrics</title><style>"
        "table{border-collapse:collapse;font-family:sans-serif}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}</style></head><body><table><tr>"
        + head
        + "</tr>"
        + cells
        + "</table></body></html>\n"
    )
    return table
