"""Inference: per-fold fp16 predictions of K clips decoded from real test videos, the fold ensemble, metrics,
CLI, memory of sequential fold loading, and fp32 compute from fp16 storage."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from infer_data import export_folds, write_test_videos
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fvc.cli import main
from fvc.core.metrics import binary_metrics
from fvc.infer.inference import infer_model, predict
from fvc.infer.video_clips import read_video_clips
from fvc.models import scale_clips
from fvc.weights.lean_load import LoadError

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


@pytest.fixture
def clip_set(in_tmp_path):
    """Tiny test videos in a workflow-like folder (cwd), with 3 folds of logistic regression exported."""
    write_test_videos(in_tmp_path)
    paths, models = export_folds("logistic_regression", {"pool": 4}, 4, 16, in_tmp_path / "models", folds=3)
    return in_tmp_path, [p.relative_to(in_tmp_path) for p in paths], models


def test_infer_writes_fold_and_ensemble_predictions(clip_set):
    root, weights, models = clip_set
    out = root / "infer"
    metrics = infer_model(
        "logistic_regression",
        weights,
        "index.parquet",
        "folds.csv",
        out / "p.parquet",
        out / "p.csv",
        out / "m.json",
        device="cpu",
        batch_size=3,
        precision="auto",
        clips_per_video=3,
        memory_log=out / "mem.jsonl",
    )
    table = pl.read_parquet(out / "p.parquet")
    assert table.columns == [
        "video_id",
        "label",
        "prob_fold0",
        "prob_fold1",
        "prob_fold2",
        "prob_ensemble",
        "pred_ensemble",
    ]
    assert table.equals(pl.read_csv(out / "p.csv"))
    assert table["video_id"].to_list() == ["fake/v1.mp4", "fake/v3.mp4", "real/v0.mp4", "real/v2.mp4"]
    assert table["label"].to_list() == [1, 1, 0, 0]

    # Each video's 3 clips decoded from its file: [videos, clips, T, 3, H, W]
    clips = torch.stack([read_video_clips(f"videos/{v}", 4, 16, 3) for v in table["video_id"]])
    batch = scale_clips(clips.flatten(0, 1))
    centre = []
    with torch.inference_mode():
        for fold, model in enumerate(models):  # fp16 inference vs the fp32 model in memory
            probs = torch.sigmoid(model(batch)).reshape(4, 3).numpy()
            centre.append(probs[:, 1])
            np.testing.assert_allclose(table[f"prob_fold{fold}"].to_numpy(), probs.mean(1), atol=1e-2)
    folds = table.select(pl.col("^prob_fold.*$")).to_numpy()
    np.testing.assert_allclose(table["prob_ensemble"].to_numpy(), folds.mean(axis=1), rtol=1e-12)
    assert table["pred_ensemble"].to_list() == (table["prob_ensemble"] >= 0.5).cast(int).to_list()

    assert json.loads((out / "m.json").read_text()) == metrics
    assert [f["fold"] for f in metrics["folds"]] == [0, 1, 2]
    assert metrics["precision"]["requested"] == "auto"
    assert metrics["precision"]["folds"] == [metrics["precision"]["chosen"]] * 3
    labels = table["label"].to_numpy()
    assert metrics["ensemble"] == binary_metrics(labels, table["prob_ensemble"].to_numpy())
    by_k = metrics["clips_per_video"]
    assert list(by_k) == ["1", "3"] and by_k["3"]["auc"] == metrics["ensemble"]["auc"]
    centre_ensemble = binary_metrics(labels, np.mean(centre, axis=0))
    assert {k: by_k["1"][k] for k in ("n", "tp", "tn")} == {k: centre_ensemble[k] for k in ("n", "tp", "tn")}
    assert by_k["1"]["brier"] == pytest.approx(centre_ensemble["brier"], abs=1e-3)
    assert metrics["folds"][1] == {
        "fold": 1,
        "member": "fold1",
        "seed": None,
        "weights": str(weights[1]),
        **binary_metrics(labels, table["prob_fold1"].to_numpy()),
    }
    points = [json.loads(line)["point"] for line in (out / "mem.jsonl").read_text().splitlines()]
    assert points == ["start", "preflight"] + ["load", "predicted", "unload"] * 3 + ["end"]


def test_command_and_its_refusals(clip_set, monkeypatch, capsys):
    root, weights, _ = clip_set
    args = ["infer", "--model", "logistic_regression", "--index", "index.parquet", "--folds", "folds.csv"]
    args += ["--export-dir", str(weights[0].parent), "--device", "cpu"]  # folds.k: the schema's 3
    assert main([*args, "--out-dir", "out"]) == 0
    assert {p.name for p in (root / "out").iterdir()} == {
        "predictions.parquet",
        "predictions.csv",
        "metrics.json",
    }
    svm = [*args[:2], "svm", *args[3:]]
    assert main([*svm, "--out-dir", "out"]) == 1
    assert "export of model 'logistic_regression', expected 'svm'" in capsys.readouterr().err
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "50")
    assert main([*args, "--out-dir", "refused"]) == 1
    err = capsys.readouterr().err
    assert "the job may use 50 MB" in err and "models.logistic_regression.infer_mem_mb" in err
    assert not (root / "refused").exists()  # stopped before loading or writing anything
    with pytest.raises(LoadError, match="pickle"):
        infer_model(
            "logistic_regression",
            ["models/fold0.pt"],
            "index.parquet",
            "folds.csv",
            "a",
            "b",
            "c",
            device="cpu",
            batch_size=1,
            precision="auto",
            clips_per_video=1,
        )


class HalfShy(nn.Module):
    """A model whose 'op' refuses fp16 inputs, like a CPU kernel without a Half implementation."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(12, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float16:
            raise RuntimeError("\"fancy_op\" not implemented for 'Half'")
        return self.head(self.norm(self.proj(x.mean((3, 4)).flatten(1)))).squeeze(-1)


def test_failing_precision_falls_back_to_fp32_from_fp16_storage():
    reference = HalfShy().eval()
    model = HalfShy().half().eval()
    model.load_state_dict(reference.state_dict())
    generator = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (5, 4, 3, 8, 8), dtype=torch.uint8, generator=generator)
    loader = DataLoader(TensorDataset(clips, torch.zeros(5)), batch_size=2)
    probs, ran = predict(model, loader, torch.device("cpu"), "fp16")
    assert ran == {"requested": "fp16", "chosen": "fp32", "probe": []}
    with torch.inference_mode():
        expected = torch.sigmoid(reference(scale_clips(clips))).numpy()
    np.testing.assert_allclose(probs, expected, atol=2e-3)
    assert all(p.dtype == torch.float16 for p in model.parameters())  # storage stays fp16
    assert not model.head._forward_pre_hooks and not model.head._forward_hooks


MEMORY_SCRIPT = """
import json, sys
from fvc.infer.inference import infer_model
infer_model("vit_transformer", sys.argv[1:], "index.parquet", "folds.csv", "p.parquet", "p.csv", "m.json",
            device="cpu", batch_size=4, precision="fp32", clips_per_video=5, memory_log="mem.jsonl")
"""


@pytest.mark.slow
@pytest.mark.usefixtures("in_tmp_path")
def test_sequential_folds_hold_one_model_at_a_time(tmp_path):
    """3 folds of a ~100 MB (fp16) model: RSS grows by about one model while a fold runs, falls back after
    it, and the process peak stays below the sum of the folds."""
    write_test_videos(tmp_path)
    vit = {"hidden_size": 512, "num_hidden_layers": 16, "num_attention_heads": 8, "intermediate_size": 2048}
    [fold0], [model] = export_folds(
        "vit_transformer", {"vit": vit}, 2, 16, tmp_path / "models", 1, fast_init=True
    )
    model_mb = sum(t.numel() * 2 for t in model.state_dict().values()) / MB
    assert 90 < model_mb < 110
    del model
    paths = [fold0]
    for fold in (1, 2):  # separate files (separate mappings), same weights: cheaper than new exports
        paths.append(fold0.with_name(f"fold{fold}.safetensors"))
        shutil.copyfile(fold0, paths[-1])
        shutil.copyfile(fold0.with_suffix(".json"), paths[-1].with_suffix(".json"))
    subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, *map(str, paths)], check=True, cwd=tmp_path)
    marks = [json.loads(line) for line in (tmp_path / "mem.jsonl").read_text().splitlines()]
    base = next(m["rss_mb"] for m in marks if m["point"] == "preflight")
    running = [m["rss_mb"] - base for m in marks if m["point"] == "predicted"]
    after = [m["rss_mb"] - base for m in marks if m["point"] == "unload"]
    peak = marks[-1]["peak_rss_mb"] - base
    marks_mb = [(m["point"], round(m["rss_mb"] - base)) for m in marks]
    # Each fold holds about one model and lets it go at its unload; nothing piles up from fold to fold.
    # (In a fresh venv RSS stays ~40 MB above the pre-flight mark after every unload, the model freed: a
    # one-time cost of the first forward, so each fold is measured against its own unload.)
    held = [r - a for r, a in zip(running, after, strict=True)]
    assert len(running) == 3 and all(0.7 * model_mb < h < 1.5 * model_mb for h in held), marks_mb
    assert max(after) - after[0] < 0.3 * model_mb, marks_mb
    # The process peak (between marks too, on a busy machine) stays well below the three folds' sum.
    assert peak < 2.5 * model_mb, [(m["point"], m["rss_mb"], m["peak_rss_mb"]) for m in marks]
