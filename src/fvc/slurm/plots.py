"""The audit plot: memory requested vs used per rule and model, with the recommended sizes."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.fonttype"] = "none"  # SVG text stays text: searchable, sharp at any zoom
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the file-only backend

from fvc.slurm.recommend import Recommendation  # noqa: E402


def _label(rule: str, model: str | None) -> str:
    """A bar's name: the rule, and the model for train and infer (e.g. `train  naive_cnn`)."""
    return rule if model is None else f"{rule}  {model}"


def plot_audit(rows: list[dict], recs: Iterable[Recommendation], out: str | Path) -> None:
    """Requested vs used memory per rule/model (PNG or SVG by the file's suffix)."""
    groups: dict[str, dict] = {}
    for r in rows:
        label = _label(r["rule"], r["model"])
        g = groups.setdefault(label, {"req": 0.0, "peak": 0.0, "oom": False})
        g["req"] = max(g["req"], r["req_mem_mb"] or 0.0)
        g["peak"] = max(g["peak"], r["peak_mem_mb"] or 0.0)
        g["oom"] |= r["state"] == "OUT_OF_MEMORY"
    rec_by_label = {
        (
            _label("train" if r.key == "mem_mb" else "infer", r.row) if r.table == "models" else r.row
        ): r.recommended
        for r in recs
        if r.key == "mem_mb" or (r.table == "models" and r.key == "infer_mem_mb")
    }
    labels = sorted(groups)
    y = range(len(labels))
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 2.2))
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
    ax.set_title("Memory requested vs used per rule (and model)\nred: ran out of memory")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")  # beside the axes, over no bar
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
