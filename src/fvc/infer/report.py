"""Report material of the results: ROC curves per model and fold, training curves per model, and the metrics
table (with the test videos and groups each number rests on)."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.fonttype"] = "none"  # SVG text stays text: searchable, sharp at any zoom
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the file-only backend
import polars as pl  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from fvc.slurm.render import html_page  # noqa: E402

#: Line styles of the folds (cycled), so that every fold stays visible under and beside the ensemble.
FOLD_STYLES = (
    {"linestyle": "--", "marker": "o"},
    {"linestyle": ":", "marker": "s"},
    {"linestyle": "-.", "marker": "^"},
    {"linestyle": (0, (5, 1, 1, 1, 1, 1)), "marker": "D"},
    {"linestyle": (0, (1, 2)), "marker": "v"},
)
#: The metrics table's columns: (title, key in metrics.json's entries); `group_` keys are per group.
TABLE_COLUMNS = (
    ("AUC", "auc"),
    ("AP", "average_precision"),
    ("EER", "eer"),
    ("accuracy", "accuracy"),
    ("bal. acc.", "balanced_accuracy"),
    ("F1", "f1"),
    ("Brier", "brier"),
    ("TN", "tn"),
    ("FP", "fp"),
    ("FN", "fn"),
    ("TP", "tp"),
    ("group AUC", "group_auc"),
    ("group acc.", "group_accuracy"),
)


def _save(fig: plt.Figure, out: str | Path) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)


def plot_roc(predictions: str | Path, out: str | Path, model: str) -> None:
    """ROC curves of one model's folds and of their ensemble from infer's per-video predictions, drawn with
    scikit-learn's RocCurveDisplay: the AUC in each legend entry, the ensemble a broad grey band and each fold
    its own line style and markers on top of it; the legend below the axes."""
    from sklearn.metrics import RocCurveDisplay

    table = pl.read_parquet(predictions)
    labels = table["label"].to_numpy()
    fig, ax = plt.subplots(figsize=(6, 6))
    if len(set(labels.tolist())) < 2:
        ax.text(0.5, 0.5, "one class only in the test videos:\nno ROC curve", ha="center", va="center")
    else:
        RocCurveDisplay.from_predictions(
            labels,
            table["prob_ensemble"].to_numpy(),
            name="fold ensemble",
            ax=ax,
            curve_kwargs={"color": "0.6", "linewidth": 6, "alpha": 0.6, "zorder": 1},
            plot_chance_level=True,
            chance_level_kw={"color": "0.3", "linewidth": 1},
        )
        folds = [c for c in table.columns if c.startswith("prob_fold")]
        for i, column in enumerate(folds):
            RocCurveDisplay.from_predictions(
                labels,
                table[column].to_numpy(),
                name=column.removeprefix("prob_").replace("fold", "fold "),
                ax=ax,
                curve_kwargs={
                    **FOLD_STYLES[i % len(FOLD_STYLES)],
                    "linewidth": 1.5,
                    "markersize": 4,
                    "zorder": 2 + i,
                },
            )
        # Below the axes: curves of small test sets run along every edge.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize="small", frameon=False)
        ax.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.03))  # curves along an edge stay clear of the axes' frame
    ax.set_xlabel("false positive rate (real videos called fake)")
    ax.set_ylabel("true positive rate (fake videos found)")
    ax.set_title(f"{model}: ROC on {len(labels)} held-out test videos")
    fig.tight_layout()
    _save(fig, out)


def plot_training(train_metrics: Sequence[str | Path], out: str | Path, model: str) -> None:
    """Training curves of one model, one colour per fold (train's metrics.json `history`): training and
    validation loss per epoch (left), validation AUC per epoch (right)."""
    fig, (loss_ax, auc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    epochs_max = 1
    for path in train_metrics:
        data = json.loads(Path(path).read_text())
        history = data["history"]
        epochs = [row["epoch"] + 1 for row in history]
        epochs_max = max(epochs_max, *epochs)
        color = f"C{data['fold']}"
        loss_ax.plot(
            epochs, [r["train_loss"] for r in history], "-o", color=color, label=f"fold {data['fold']} train"
        )
        loss_ax.plot(
            epochs, [r["val_loss"] for r in history], "--s", color=color, label=f"fold {data['fold']} val"
        )
        auc = [float("nan") if r.get("val_auc") is None else r["val_auc"] for r in history]
        auc_ax.plot(epochs, auc, "-o", color=color, label=f"fold {data['fold']}")
        best = data["best_epoch"]
        loss_ax.plot(best + 1, history[best]["val_loss"], "*", color=color, markersize=14)
    loss_ax.set(xlabel="epoch", ylabel="loss (BCE)", title="loss (star: best epoch, exported)")
    auc_ax.set(xlabel="epoch", ylabel="validation AUC", title="validation AUC", ylim=(-0.02, 1.02))
    for ax in (loss_ax, auc_ax):
        ax.set_xlim(0.5, epochs_max + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=min(epochs_max, 10), integer=True, min_n_ticks=1))
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{model}: training curves per fold")
    fig.tight_layout()
    _save(fig, out)


def _row(model: str, fold: str, entry: dict, group: dict, videos: int, groups: int | None) -> dict:
    scores = {key: entry.get(key) for _, key in TABLE_COLUMNS if not key.startswith("group_")}
    scores.update(group_auc=group.get("auc"), group_accuracy=group.get("accuracy"))
    return {"model": model, "fold": fold, "videos": videos, "groups": groups, **scores}


def metrics_table(metrics: Mapping[str, str | Path]) -> pl.DataFrame:
    """One row per model and fold (and the ensemble) from infer's metrics.json files: the test videos and
    groups, the per-video metrics and the per-group AUC and accuracy."""
    rows = []
    for model, path in metrics.items():
        data = json.loads(Path(path).read_text())
        per_group = data.get("per_group", {"folds": [{}] * len(data["folds"]), "ensemble": {}})
        counts = data["videos"], data.get("groups")
        for fold, group in zip(data["folds"], per_group["folds"], strict=True):
            # A member's name (`fold0-seed7` in a grid over seeds), else its fold (metrics before seeds).
            name = fold["member"].removeprefix("fold") if fold.get("member") else str(fold["fold"])
            rows.append(_row(model, name, fold, group, *counts))
        rows.append(_row(model, "ensemble", data["ensemble"], per_group["ensemble"], *counts))
    schema: dict[str, type[pl.DataType]] = {
        "model": pl.String,
        "fold": pl.String,
        "videos": pl.Int64,
        "groups": pl.Int64,
    }
    schema |= {key: pl.Int64 if key in ("tn", "fp", "fn", "tp") else pl.Float64 for _, key in TABLE_COLUMNS}
    return pl.DataFrame(rows, schema=schema)


def _cell(value: object) -> str:
    if value is None:
        return "<td class='num'>-</td>"
    if isinstance(value, str):
        return f"<td>{html.escape(value)}</td>"
    return f"<td class='num'>{f'{value:.3f}' if isinstance(value, float) else value}</td>"


def write_metrics_html(metrics: Mapping[str, str | Path], out: str | Path) -> pl.DataFrame:
    """The metrics table as a small HTML page for `snakemake --report`; returns the table."""
    table = metrics_table(metrics)
    titles = ["model", "fold", "test videos", "groups", *(title for title, _ in TABLE_COLUMNS)]
    kinds = ["text", "text"] + ["num"] * (len(titles) - 2)
    head = "".join(f"<th class='{k}'>{html.escape(t)}</th>" for k, t in zip(kinds, titles, strict=True))
    cells = "".join(
        f"<tr class='{'ensemble' if row['fold'] == 'ensemble' else 'fold'}'>"
        + "".join(_cell(v) for v in row.values())
        + "</tr>"
        for row in table.iter_rows(named=True)
    )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(html_page("fvc metrics", f"<table><tr>{head}</tr>{cells}</table>"))
    return table
