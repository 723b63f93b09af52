"""Training: every model for one epoch, the fp16 export, checkpoints, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from train_fixtures import ROOT, tiny_spec, write_config, write_dataset

from fvc.clips.dataset import ClipDataset, frame_indices, load_clip_tensor
from fvc.clips.folds import fold_clips
from fvc.models import MODEL_NAMES, build_model
from fvc.train import checkpoint
from fvc.train.training import _train_epoch, train_fold
from fvc.weights.safetensors_io import LoadError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("clips")
    clips_csv, folds_csv = write_dataset(root, videos=12, augmentations=1, num_frames=8, size=32)
    return root, clips_csv, folds_csv


def run(dataset, tmp_path: Path, spec, **kwargs) -> dict:
    root, clips_csv, folds_csv = dataset
    return train_fold(
        clips_csv,
        folds_csv,
        0,
        spec,
        tmp_path / "metrics.json",
        tmp_path / "fold0.safetensors",
        tmp_path / "checkpoints",
        root=root,
        memory_log=tmp_path / "memory.jsonl",
        **{"device": "cpu", "gradient_checkpointing": True, "seed": 0, **kwargs},
    )


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_trains_one_epoch_and_exports(name, dataset, tmp_path):
    metrics = run(dataset, tmp_path, tiny_spec(name))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["best_epoch"] == 0 and len(saved["history"]) == 1
    assert saved["train_clips"] == 16 and saved["val_clips"] == 4
    best = saved["best"]
    assert best["val_loss"] > 0 and 0 <= best["val_accuracy"] <= 1 and best["val_auc"] is not None
    assert metrics["resumed_from_epoch"] is None
    export = json.loads((tmp_path / "fold0.json").read_text())
    assert export["dtype"] == "float16" and export["num_frames"] == 4 and export["size"] == 32
    weights = load_file(str(tmp_path / "fold0.safetensors"))
    assert all(t.dtype == torch.float16 for t in weights.values() if t.is_floating_point())
    with torch.device("meta"):
        rebuilt = build_model(export["model"], export["params"], export["num_frames"], export["size"])
    rebuilt.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, assign=True, strict=True
    )
    memory = [json.loads(line) for line in (tmp_path / "memory.jsonl").read_text().splitlines()]
    assert [m["point"] for m in memory] == ["start", "model_built", "epoch", "end"]


def sgd_epoch(dataset, batch_size: int, accum: int) -> torch.Tensor:
    """One epoch of plain SGD (lr 1, gradient scale visible) over the 16 training clips in a fixed order."""
    root, clips_csv, folds_csv = dataset
    train_rows, _ = fold_clips(clips_csv, folds_csv, 0)
    torch.manual_seed(0)
    model = build_model("logistic_regression", {"pool": 4}, 4, 32)
    loader = DataLoader(ClipDataset(train_rows, 4, 32, root), batch_size=batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    _train_epoch(model, loader, optimizer, scaler, torch.device("cpu"), accum, "test")
    return model.head.weight.detach().clone()


def test_gradient_accumulation_handles_a_partial_last_step(dataset):
    """Batches of 2 x 3 accumulation steps over 16 clips = steps of 6, 6 and a partial 4 (two micro-batches):
    the same updates as batches of 6, 6, 4 without accumulation."""
    whole = sgd_epoch(dataset, 6, 1)
    accumulated = sgd_epoch(dataset, 2, 3)
    torch.testing.assert_close(accumulated, whole, atol=1e-3, rtol=1e-3)
    assert not torch.allclose(sgd_epoch(dataset, 16, 1), whole, atol=1e-3)


def test_checkpoint_files_and_optimizer_round_trip(tmp_path):
    param = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([param], lr=0.1)
    param.grad = torch.ones(3)
    opt.step()
    tensors, meta = checkpoint.flatten_optimizer(opt.state_dict())
    json.dumps(meta)
    restored = checkpoint.unflatten_optimizer(tensors, json.loads(json.dumps(meta)))
    fresh = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=0.5)
    fresh.load_state_dict(restored)
    torch.testing.assert_close(
        fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"]
    )
    assert fresh.param_groups[0]["lr"] == 0.1
    for epoch in range(2):
        checkpoint.save_checkpoint(
            tmp_path, epoch, {"model": {"w": torch.full((2,), float(epoch))}}, {"x": epoch}
        )
    state = checkpoint.load_state(tmp_path)
    assert state["epoch"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == [
        "model.epoch0001.safetensors",
        "state.json",
    ]
    assert checkpoint.load_tensors(tmp_path, state, "model")["w"].tolist() == [1.0, 1.0]
    (tmp_path / "model.epoch0001.safetensors").unlink()
    with pytest.raises(LoadError, match="model.epoch0001.safetensors, which is missing"):
        checkpoint.load_state(tmp_path)


def test_load_clip_tensor_subsamples_resizes_and_rejects_bad_files(tmp_path):
    frames = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 8, 8, 3).contiguous()
    save_file({"frames": frames}, str(tmp_path / "c.safetensors"))
    clip = load_clip_tensor(tmp_path / "c.safetensors", 4, 4)
    assert clip.shape == (4, 3, 4, 4) and clip.dtype == torch.uint8
    assert clip[:, 0, 0, 0].tolist() == frame_indices(10, 4) == [0, 3, 6, 9]
    save_file({"pixels": frames}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"bad\.safetensors: no tensor 'frames'"):
        load_clip_tensor(tmp_path / "bad.safetensors", 4, 4)
    with pytest.raises(ValueError, match="cannot take 12 frames"):
        load_clip_tensor(tmp_path / "c.safetensors", 12, 4)


def test_checkpoint_of_another_spec_is_refused(dataset, tmp_path):
    run(dataset, tmp_path, tiny_spec("logistic_regression"))
    with pytest.raises(ValueError, match="checkpoint was made for"):
        run(dataset, tmp_path, tiny_spec("logistic_regression", lr=0.5))


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted_run(dataset, tmp_path):
    root, clips_csv, folds_csv = dataset
    spec = tiny_spec("x3d", epochs=3)
    reference = run(dataset, tmp_path / "reference", spec)
    config = write_config(tmp_path / "config.yaml", spec)
    out = tmp_path / "killed"
    argv = [
        sys.executable,
        "-m",
        "fvc.cli",
        "train",
        "--config",
        str(config),
        "--model",
        "x3d",
        "--fold",
        "0",
        "--clips",
        str(clips_csv),
        "--folds",
        str(folds_csv),
        "--root",
        str(root),
        "--seed",
        "0",
        "--out-dir",
        str(out),
        "--export-dir",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "state.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, (
            "training ended before its first checkpoint"
        )
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    killed_at = json.loads((out / "checkpoints" / "state.json").read_text())["epoch"]
    assert killed_at < spec.epochs - 1 and not (out / "fold0.safetensors").exists()

    run(dataset, out, spec, seed=0)  # the requeued job (in-process: one interpreter start-up less)
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["resumed_from_epoch"] == killed_at
    for got, want in zip(resumed["history"], reference["history"], strict=True):
        assert {k: v for k, v in got.items() if k not in ("seconds", "clips_per_s")} == {
            k: v for k, v in want.items() if k not in ("seconds", "clips_per_s")
        }
    a = load_file(str(out / "fold0.safetensors"))
    b = load_file(str(tmp_path / "reference" / "fold0.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
