"""The whole workflow on the default (local) profile, end to end on a tiny demo dataset."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml
from workflow_runner import snakemake

pytestmark = pytest.mark.slow

STAGES = ("demo_data", "download", "index", "augment", "folds", "train", "infer")


@pytest.fixture()
def local_run(tiny_local_run: Path) -> Path:
    """The session's finished tiny workflow run (conftest)."""
    return tiny_local_run


def test_every_stage_ran_and_logged_its_memory(local_run: Path) -> None:
    for stage in STAGES:
        memory_logs = list((local_run / "logs" / stage).rglob("*.memory.jsonl"))
        assert memory_logs, f"no memory log for {stage}"
        for path in memory_logs:
            records = [json.loads(line) for line in path.read_text().splitlines()]
            assert len(records) >= 2, path
            assert all(r["rss_mb"] > 0 for r in records), path
        assert list((local_run / "logs" / "benchmarks" / stage).rglob("*.tsv")), f"no benchmark for {stage}"


def test_train_jobs_warn_when_peak_plus_overhead_nears_mem_mb(local_run: Path) -> None:
    """The workflow hands resources.snakemake_overhead_mb to training: a row whose peak alone fits its
    mem_mb but whose peak plus the overhead does not is warned about (tiny.yaml: logistic_regression)."""
    config = yaml.safe_load((local_run / "config.yaml").read_text())
    overhead = config.get("resources", {}).get("snakemake_overhead_mb", 300)
    edits = yaml.safe_load((local_run / "test_config.yaml").read_text())["models"]
    for log in (local_run / "logs" / "train").rglob("fold*.log"):
        if log.name.endswith(".attempts.log"):  # the history of every attempt (fvc.core.joblog)
            continue
        model = log.parent.name
        memory = [json.loads(line) for line in log.with_suffix(".memory.jsonl").read_text().splitlines()]
        peak = memory[-1]["peak_rss_mb"]
        mem_mb = {**config["models"][model], **edits.get(model, {})}["mem_mb"]
        warned = f"models.{model}.mem_mb = {mem_mb} MB" in log.read_text()
        assert warned == (peak + overhead > 0.9 * mem_mb), (log, peak, mem_mb)
        if model == "logistic_regression":
            assert peak < 0.9 * mem_mb and warned, (peak, mem_mb)  # the overhead made the difference


def test_ensemble_predictions_cover_the_test_videos(local_run: Path) -> None:
    config = yaml.safe_load((local_run / "test_config.yaml").read_text())
    folds = pl.read_csv(local_run / "results" / "folds" / "folds.csv")
    test_videos = set(folds.filter(pl.col("split") == "test")["video_id"])
    assert test_videos
    for model in config["train"]["models"]:
        predictions = pl.read_parquet(local_run / "results" / "infer" / model / "predictions.parquet")
        assert set(predictions["video_id"]) == test_videos
        fold_columns = [f"prob_fold{f}" for f in range(config["folds"]["k"])]
        mean = predictions.select(pl.mean_horizontal(fold_columns)).to_series()
        assert (mean - predictions["prob_ensemble"]).abs().max() < 1e-6
        metrics = json.loads((local_run / "results" / "infer" / model / "metrics.json").read_text())
        assert 0.0 <= metrics["ensemble"]["accuracy"] <= 1.0


def test_rerun_has_nothing_to_do(local_run: Path) -> None:
    result = snakemake(local_run, "--profile", "profiles/local", "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_report_holds_the_audit_plot_roc_curves_and_metrics(local_run: Path) -> None:
    result = snakemake(local_run, "--profile", "profiles/local", "--report", "report.html")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = (local_run / "report.html").read_text()
    for name in ("audit.svg", "metrics.html", "logistic_regression.svg", "naive_cnn.svg"):
        assert name in html, name
    audit = pl.read_csv(local_run / "results" / "audit" / "audit.csv")
    assert {"train", "infer", "augment"} <= set(audit["rule"])
