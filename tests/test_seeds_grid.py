"""The training grid over seeds (`train.seeds`): a train job per (model, fold, seed) with the seed in its
files, trained with its own seed, and inference ensembling over folds and seeds; one seed keeps the paths of
before."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
import yaml
from workflow_runner import copy_workflow, snakemake

from fvc.core.paths import Layout, member, parse_member
from fvc.infer.predict import fold_count, fold_weights
from fvc.slurm.jobs import split_member
from fvc.slurm.rows import memory_log_path

GRID = {
    "dataset": {"demo": {"videos": 12}},
    "augment": {"num_frames": 4, "size": 32, "num_augmentations": 1},
    "folds": {"k": 2, "test_fraction": 0.25},
    "train": {"models": ["logistic_regression"], "seeds": [1, 2], "device": "cpu", "precision": "fp32"},
    "infer": {"device": "cpu", "precision": "fp32", "clips_per_video": 1},
    "models": {"logistic_regression": {"epochs": 1}},
    "audit": {"enabled": False},
}


def test_member_names_carry_the_seed_only_in_a_grid_over_seeds():
    layout = Layout("results")
    assert layout.train("m", 0).metrics == Path("results/train/m/fold0/metrics.json")
    assert layout.train("m", 0, 7).metrics == Path("results/train/m/fold0-seed7/metrics.json")
    assert layout.exports("m").weights(1) == Path("results/models/m/fold1.safetensors")
    assert layout.exports("m").weights(1, 7) == Path("results/models/m/fold1-seed7.safetensors")
    assert layout.exports("m").config(1, 7) == Path("results/models/m/fold1-seed7.json")
    assert parse_member("x/fold3-seed12.safetensors") == (3, 12)
    assert parse_member("x/fold3.safetensors.index.json") == (3, None)
    assert parse_member("x/shared/abc.safetensors") is None
    assert member("{fold}", "{seed}") == "fold{fold}-seed{seed}"


def test_audit_reads_model_fold_and_seed_from_the_plugins_wildcards():
    assert split_member("naive_cnn_0") == ("naive_cnn", 0, None)
    assert split_member("naive_cnn_1_7") == ("naive_cnn", 1, 7)
    assert split_member("naive_cnn") == ("naive_cnn", None, None)
    row = {"rule": "train", "model": "naive_cnn", "fold": 1, "seed": 7}
    assert memory_log_path("w", row) == Path("w/logs/train/naive_cnn/fold1-seed7.memory.jsonl")
    assert memory_log_path("w", {**row, "seed": None}) == Path("w/logs/train/naive_cnn/fold1.memory.jsonl")


def test_predict_finds_every_member_of_a_folder(tmp_path):
    for name in ("fold1-seed2", "fold0-seed2", "fold0-seed1", "fold1-seed1", "fold0-abcdef0123456789"):
        (tmp_path / f"{name}.safetensors").write_bytes(b"")
    weights = fold_weights(tmp_path)
    assert [p.stem for p in weights] == ["fold0-seed1", "fold0-seed2", "fold1-seed1", "fold1-seed2"]
    assert fold_count(weights) == 2


def dry_run_outputs(workdir: Path, *args: str) -> list[str]:
    """The train outputs a dry run of the workflow would make."""
    done = snakemake(workdir, "-n", "--cores", "1", "--forceall", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return sorted(set(re.findall(r"results/models/\S+?\.safetensors", done.stdout + done.stderr)))


def test_one_seed_keeps_the_paths_of_before(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    assert dry_run_outputs(work) == [
        f"results/models/{model}/fold{fold}.safetensors"
        for model in ("logistic_regression", "naive_cnn")
        for fold in (0, 1)
    ]


@pytest.fixture(scope="module", name="grid_run")
def grid_run_fixture(tmp_path_factory) -> Path:
    """The workflow run locally over 1 model x 2 folds x 2 seeds."""
    work = tmp_path_factory.mktemp("grid")
    config = work / "grid.yaml"
    config.write_text(yaml.safe_dump(GRID))
    copy_workflow(work, config)
    done = snakemake(work, "--cores", "2", timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return work


def test_a_train_job_per_model_fold_and_seed_trained_with_its_seed(grid_run):
    layout = Layout(grid_run / "results")
    members = [(fold, seed) for fold in (0, 1) for seed in (1, 2)]
    for fold, seed in members:
        name = member(fold, seed)
        assert layout.exports("logistic_regression").weights(fold, seed).is_file()
        assert layout.train("logistic_regression", fold, seed).metrics.is_file()
        assert (grid_run / f"logs/train/logistic_regression/{name}.memory.jsonl").is_file()
        assert (grid_run / f"logs/benchmarks/train/logistic_regression/{name}.tsv").is_file()
    assert not layout.train("logistic_regression", 0).path.exists()
    # Training is deterministic per seed (tests/test_train.py): different weights, so the seed reached it.
    a, b = (layout.exports("logistic_regression").weights(0, s).read_bytes() for s in (1, 2))
    assert a != b


def test_inference_ensembles_over_folds_and_seeds(grid_run):
    infer = Layout(grid_run / "results").infer("logistic_regression")
    metrics = json.loads(infer.metrics.read_text())
    assert metrics["members"] == 4 and metrics["seeds"] == [1, 2]
    assert [(m["fold"], m["seed"]) for m in metrics["folds"]] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    table = pl.read_parquet(infer.predictions_parquet)
    cols = [f"prob_fold{f}-seed{s}" for f in (0, 1) for s in (1, 2)]
    assert [c for c in table.columns if c.startswith("prob_fold")] == cols
    mean = table.select(pl.mean_horizontal(cols)).to_series()
    assert table["prob_ensemble"].to_list() == pytest.approx(mean.to_list())


def test_an_edited_row_retrains_every_member(grid_run):
    config = yaml.safe_load((grid_run / "test_config.yaml").read_text())
    config["models"]["logistic_regression"]["lr"] = 0.02
    (grid_run / "edited.yaml").write_text(yaml.safe_dump(config))
    done = snakemake(grid_run, "-n", "--cores", "1", "--configfile", "edited.yaml")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert re.search(r"^train\s+4$", out, re.M), out
