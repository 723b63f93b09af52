"""What the terminal shows at the end of a run: the summary, and no "Shell command: None" lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from workflow_runner import copy_workflow, snakemake

from fvc.core.paths import Layout
from fvc.slurm.recommend import Recommendation
from fvc.slurm.summary import biggest, model_lines


def _rec(row: str, current: int | None, recommended: int, action: str) -> Recommendation:
    return Recommendation("models", row, "mem_mb", current, recommended, action, "")


def _auc(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def test_biggest_recommendations_put_memory_kills_first_then_the_largest_changes():
    recs = [
        _rec("a", 4000, 1000, "lower"),  # -3000
        _rec("b", 1000, 1000, "keep"),
        _rec("c", 1000, 1500, "raise-oom"),
        _rec("d", 2000, 2600, "raise"),  # +600
        _rec("e", 8000, 1000, "lower"),  # -7000
    ]
    assert [r.row for r in biggest(recs)] == ["c", "e", "a"]


def test_the_profile_prints_no_shell_command_lines(tmp_path: Path):
    workdir = copy_workflow(tmp_path)
    result = snakemake(workdir, "--profile", "profiles/local", "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert "rule train:" in out and "reason:" in out  # the plan and its reasons are printed
    assert "Shell command" not in out


@pytest.mark.slow
def test_a_run_ends_with_the_summary(tiny_local_run: Path):
    out = (tiny_local_run / "snakemake_output.txt").read_text()
    config = yaml.safe_load((tiny_local_run / "test_config.yaml").read_text())
    assert "Shell command" not in out
    summary = out[out.index("fvc: fold ensembles on the held-out test videos") :]
    for model in config["train"]["models"]:
        metrics = json.loads((tiny_local_run / "results" / "infer" / model / "metrics.json").read_text())
        auc = _auc(metrics["ensemble"]["auc"])
        line = next(line for line in summary.splitlines() if line.strip().startswith(model))
        assert f"AUC {auc}" in line and f"accuracy {metrics['ensemble']['accuracy']:.3f}" in line
        assert f"on {metrics['videos']} test videos in {metrics['groups']} groups" in line
        k = str(config.get("infer", {}).get("clips_per_video", 5))
        aucs = {n: _auc(metrics["clips_per_video"][n]["auc"]) for n in ("1", k)}
        assert f"(AUC {aucs['1']} at K = 1 clip, {aucs[k]} at K = {k} clips per video)" in line
    assert "memory audit: results/audit/audit.csv" in summary
    assert "biggest recommendations" in summary and "-> " in summary
    assert "--report report.html" in summary
    # The summary comes before Snakemake's closing lines.
    assert summary.index("memory audit") < summary.index("Complete log")


def test_a_model_line_sets_the_centre_clip_auc_beside_k_clips(tmp_path: Path):
    layout = Layout(tmp_path)
    layout.infer("naive_cnn").path.mkdir(parents=True)
    ensemble = {"auc": 0.75, "accuracy": 0.625}
    metrics = {
        "videos": 8,
        "groups": 6,
        "ensemble": ensemble,
        "clips_per_video": {"1": {"auc": 0.5}, "5": ensemble},
    }
    layout.infer("naive_cnn").metrics.write_text(json.dumps(metrics))
    [line] = model_lines(layout, ["naive_cnn"])
    assert line == (
        "  naive_cnn  AUC 0.750  accuracy 0.625  on 8 test videos in 6 groups"
        "  (AUC 0.500 at K = 1 clip, 0.750 at K = 5 clips per video)"
    )
