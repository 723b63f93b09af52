"""Report material of the infer results: ROC curves per model and fold, and the metrics table."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the file-only backend
import polars as pl  # noqa: E402

from fvc.core.metrics import roc_points  # noqa: E402


def plot_roc(predictions: str | Path, out: str | Path, model: str) -> None:
    """ROC curves of one model's folds and of their ensemble from infer's per-video predictions."""
    table = pl.read_parquet(predictions)
    labels = table["label"].to_numpy()
    columns = [c for c in table.columns if c.startswith("prob_fold")] + ["prob_ensemble"]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for column in columns:
        name = column.removeprefix("prob_").replace("fold", "fold ")
        points = roc_points(labels, table[column].to_numpy())
        if points is None:
            continue
        fpr, tpr = points
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
