"""Inference precision: the auto probe (its record, budget and choice), forced precisions, refusals, agreement
with fp32, one unit's compute copy at a time, and its memory on real safetensors files."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from infer_data import export_folds, write_test_videos
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fvc.cli import main
from fvc.core.errors import FvcError
from fvc.infer.inference import TOLERANCE, check_exports, infer_model, load_export, predict
from fvc.infer.precision import (
    cast_compute,
    check_precision,
    compute_copy_bytes,
    compute_in,
    largest_unit_bytes,
    units,
)
from fvc.models import scale_clips

CPU = torch.device("cpu")
MB = 1024 * 1024


def loader_of(clips: torch.Tensor, batch_size: int = 4) -> DataLoader:
    return DataLoader(TensorDataset(clips, torch.zeros(len(clips))), batch_size=batch_size)


def random_clips(n: int, frames: int, size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, frames, 3, size, size), dtype=torch.uint8, generator=generator)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """fp16 exports of three models (conv, transformer with fused encoder layers, 3D conv) and their fp32
    originals."""
    root = tmp_path_factory.mktemp("exports")
    vit = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    rows = {
        "naive_cnn": {"widths": [8, 16]},
        "vit_transformer": {"vit": {**vit, "patch_size": 8}, "temporal_layers": 1, "temporal_heads": 2},
        "x3d": {"width": 8, "depths": [1, 1, 1, 1], "head_dim": 32},
    }
    out = {}
    for name, params in rows.items():
        [path], [model] = export_folds(name, params, 4, 32, root / name, folds=1)
        out[name] = (path, model)
    return out


@pytest.mark.parametrize("name", ["naive_cnn", "vit_transformer", "x3d"])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_forced_precision_computes_in_it_and_agrees_with_fp32(exports, name, precision):
    path, original = exports[name]
    model = load_export(path)
    seen: set[torch.dtype] = set()
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d | nn.Conv3d):
            module.register_forward_hook(lambda m, args, out: seen.add(out.dtype))
    clips = random_clips(6, 4, 32)
    probs, ran = predict(model, loader_of(clips), CPU, precision)
    assert ran == {"requested": precision, "chosen": precision, "probe": []}
    assert seen == {{"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]}
    with torch.inference_mode():
        expected = torch.sigmoid(original(scale_clips(clips))).numpy()
    np.testing.assert_allclose(probs, expected, atol=TOLERANCE)
    assert all(t.dtype == torch.float16 for t in model.state_dict().values() if t.is_floating_point())


def test_auto_probes_every_candidate_and_takes_the_fastest_accepted(exports):
    path, _ = exports["x3d"]
    clips = random_clips(40, 4, 32)
    probs, ran = predict(load_export(path), loader_of(clips), CPU, "auto", job_batches=100_000)
    trials = {t["precision"]: t for t in ran["probe"]}
    assert list(trials) == ["fp32", "bf16", "fp16"] and ran["requested"] == "auto"
    accepted = {p: t["ms_per_batch"] for p, t in trials.items() if not t["rejected"]}
    assert "fp32" in accepted and all(ms > 0 for ms in accepted.values())
    assert ran["chosen"] == min(accepted, key=accepted.get)
    for trial in trials.values():
        assert trial["rejected"] or trial["max_dp"] <= TOLERANCE
        assert trial["rejected"].startswith(("slower than", "not")) or not trial["rejected"]
    reference, _ = predict(load_export(path), loader_of(clips), CPU, "fp32")
    assert len(probs) == 40
    np.testing.assert_allclose(probs, reference, atol=TOLERANCE)


class SlowInHalf(nn.Module):
    """Fast in fp32; each of its blocks sleeps in fp16, like a CPU without fp16 arithmetic."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(3, 3) for _ in range(4))
        self.head = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.mean((1, 3, 4))
        for block in self.blocks:
            if h.dtype == torch.float16:
                time.sleep(0.2)
            h = block(h)
        return self.head(h).squeeze(-1)


def test_probe_stays_within_its_budget(caplog):
    """fp16 would take 0.8 s per batch; the probe's budget (2 % of 1000 fast batches) cuts it after one
    block, and the candidates it could not afford are recorded as such."""
    model = SlowInHalf().half().eval()
    caplog.set_level(logging.INFO, "fvc.infer")
    start = time.perf_counter()
    probs, ran = predict(model, loader_of(random_clips(12, 2, 4), 2), CPU, "auto", job_batches=1000)
    assert time.perf_counter() - start < 0.6
    trials = {t["precision"]: t for t in ran["probe"]}
    assert ran["chosen"] in {"fp32", "bf16"} and len(probs) == 12
    assert trials["fp16"]["rejected"].startswith("not measured: ")
    assert "budget" in trials["fp16"]["rejected"] and "2% of the job" in trials["fp16"]["rejected"]
    assert f"auto chose {ran['chosen']} (fp32 " in caplog.text and "; fp16 not measured: " in caplog.text
    assert trials["fp16"]["ms_per_batch"] is None


def test_a_job_too_small_to_afford_the_probe_runs_in_fp32_at_once():
    """2 % of 10 batches is less than one fp32 batch per other candidate: none is tried (a slow one's first
    op alone would cost the job more than its budget), as training's probe does for a job that small."""
    model = SlowInHalf().half().eval()
    start = time.perf_counter()
    probs, ran = predict(model, loader_of(random_clips(20, 2, 4), 2), CPU, "auto", job_batches=10)
    assert time.perf_counter() - start < 0.2  # fp16 would sleep 0.2 s in its first block
    trials = {t["precision"]: t for t in ran["probe"]}
    assert ran["chosen"] == "fp32" and len(probs) == 20
    for name in ("bf16", "fp16"):
        assert trials[name]["rejected"].startswith("not measured: job too small to probe (2% of it")
        assert trials[name]["ms_per_batch"] is None


class OneSlowOpInHalf(nn.Module):
    """Fast in fp32; in fp16 its one block is a single uninterruptible op costing 0.15 s per clip."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Linear(3, 3)
        self.head = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.mean((1, 3, 4))
        if h.dtype == torch.float16:
            time.sleep(0.15 * len(h))
        return self.head(self.block(h)).squeeze(-1)


def test_probe_drops_a_slow_candidate_on_one_clip_not_a_whole_batch():
    """The deadline cannot cut an op short, so a candidate is first tried on one clip of the check batch:
    fp16 costs 0.15 s there instead of 1.2 s on the batch of 8."""
    model = OneSlowOpInHalf().half().eval()
    start = time.perf_counter()
    probs, ran = predict(model, loader_of(random_clips(32, 2, 4), 8), CPU, "auto", job_batches=10_000)
    elapsed = time.perf_counter() - start
    trials = {t["precision"]: t for t in ran["probe"]}
    assert len(probs) == 32 and ran["chosen"] in {"fp32", "bf16"}
    assert trials["fp16"]["rejected"].startswith("not measured: one item exceeds the best whole batch")
    assert 0.15 <= elapsed < 0.6


def test_infer_model_writes_the_probe_and_honours_a_forced_precision(in_tmp_path):
    write_test_videos(in_tmp_path)
    weights, _ = export_folds("naive_cnn", {"widths": [4]}, 4, 16, in_tmp_path / "models", folds=2)
    common = ("index.parquet", "folds.csv", "p.parquet", "p.csv", "m.json")
    metrics = infer_model(
        "naive_cnn", weights, *common, device="cpu", batch_size=1, precision="auto", clips_per_video=1
    )
    precision = json.loads((in_tmp_path / "m.json").read_text())["precision"]
    assert precision == metrics["precision"] and precision["requested"] == "auto"
    assert [t["precision"] for t in precision["probe"]] == ["fp32", "bf16", "fp16"]
    assert precision["folds"] == [precision["chosen"]] * 2
    metrics = infer_model(
        "naive_cnn", weights, *common, device="cpu", batch_size=1, precision="bf16", clips_per_video=1
    )
    assert metrics["precision"] == {"requested": "bf16", "chosen": "bf16", "probe": [], "folds": ["bf16"] * 2}


def test_a_precision_the_device_cannot_do_is_refused_naming_the_key(in_tmp_path, capsys):
    check_precision("fp16", CPU)
    with pytest.raises(FvcError, match=r"^infer.precision is 'bf16' but cuda cannot compute in it") as err:
        check_precision("bf16", torch.device("cuda"))  # torch here sees no GPU with bf16
    assert "\n" not in str(err.value)
    with pytest.raises(FvcError, match="infer.precision is 'int8'"):
        infer_model(
            "naive_cnn",
            [],
            "c",
            "f",
            "a",
            "b",
            "m",
            device="cpu",
            batch_size=1,
            precision="int8",
            clips_per_video=1,
        )
    assert main(["infer", "--model", "naive_cnn", "--precision", "fp8"]) == 1
    assert "infer.precision = 'fp8'" in capsys.readouterr().err


def test_units_cast_fused_blocks_whole_and_restore_storage():
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    model = nn.Sequential(nn.Linear(8, 16), nn.TransformerEncoder(layer, 2, enable_nested_tensor=False))
    model = model.half().eval()
    found = {type(m).__name__: sum(t.numel() for _, _, t in slots) for m, slots in units(model)}
    assert found == {
        "Linear": 8 * 16 + 16,
        "TransformerEncoderLayer": sum(p.numel() for p in layer.parameters()),
    }
    assert largest_unit_bytes(model, torch.float32) == 4 * found["TransformerEncoderLayer"]
    x = torch.randn(2, 5, 8)
    with torch.inference_mode(), cast_compute(model, torch.float32):
        out = model(x)
    assert out.dtype == torch.float32
    assert all(p.dtype == torch.float16 and isinstance(p, nn.Parameter) for p in model.parameters())
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())


MEMORY_SCRIPT = """
import json, sys, torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from fvc.core.memory import peak_rss_bytes
from fvc.infer.inference import predict
from fvc.weights.lean_load import lean_load

class Wide(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(768, 2048), *[nn.Linear(2048, 2048) for _ in range(12)])
        self.head = nn.Linear(2048, 1)
    def forward(self, x):
        return self.head(self.layers(x.flatten(1)))

model = lean_load(Wide, sys.argv[1])
for t in model.state_dict().values():  # out of the memory map: its pages could be dropped and fault back in
    t.data = t.data.clone()
clips = torch.randint(0, 256, (8, 1, 3, 16, 16), dtype=torch.uint8)
loader = DataLoader(TensorDataset(clips, torch.zeros(8)), batch_size=4)
base = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) * 1024
open("/proc/self/clear_refs", "w").write("5")
probs, ran = predict(model, loader, torch.device("cpu"), "fp32")
print(json.dumps({"increase": peak_rss_bytes() - base, "chosen": ran["chosen"]}))
"""


@pytest.mark.slow
def test_fp32_compute_from_fp16_storage_holds_one_layer_copy(tmp_path):
    """13 layers of 8 MB fp16 (16 MB fp32 each): predicting in fp32 raises the peak by about one layer's fp32
    copy, far below the 208 MB an fp32 copy of the model would add."""
    from safetensors.torch import save_file

    tensors = {f"layers.{i}.weight": torch.zeros(2048, 2048 if i else 768) for i in range(13)}
    tensors |= {f"layers.{i}.bias": torch.zeros(2048) for i in range(13)}
    tensors |= {"head.weight": torch.zeros(1, 2048), "head.bias": torch.zeros(1)}
    save_file({k: v.half() for k, v in tensors.items()}, tmp_path / "wide.safetensors")
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / "wide.safetensors")],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    layer_fp32 = 2048 * 2048 * 4
    assert result["chosen"] == "fp32"
    assert 0.5 * layer_fp32 < result["increase"] < 2 * layer_fp32 + 8 * MB, result["increase"] / MB


def test_preflight_is_given_the_compute_copy_the_model_gets(exports):
    """A small model's whole fp32 copy; a model above SMALL_COPY, its largest unit's."""
    path, original = exports["naive_cnn"]
    config = json.loads(path.with_suffix(".json").read_text())
    assert check_exports([path], [config]) == 4 * sum(
        t.numel() for t in original.state_dict().values() if t.is_floating_point()
    )
    big = nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(3)]).half()
    assert (
        compute_copy_bytes(big, torch.float32)
        == 4 * (1024 * 1024 + 1024)
        == largest_unit_bytes(big, torch.float32)
    )
    assert compute_copy_bytes(big[:1], torch.float32) == 4 * (1024 * 1024 + 1024)


def test_a_small_model_computes_on_one_copy_without_hooks():
    """Below SMALL_COPY the compute copy is made once on entry (no hook runs per batch) and storage is back
    in fp16, as Parameters, on exit; a model above it is cast per unit through hooks."""
    small = nn.Sequential(nn.Linear(8, 16), nn.GRU(16, 4, batch_first=True)).half().eval()
    x = torch.randn(2, 3, 8)
    with torch.inference_mode(), compute_in(small, torch.float32):
        assert not any(m._forward_pre_hooks for m in small.modules())
        assert all(p.dtype == torch.float32 for p in small.parameters())
        out, _ = small(x)
    assert out.dtype == torch.float32
    assert all(p.dtype == torch.float16 and isinstance(p, nn.Parameter) for p in small.parameters())
    big = nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(3)]).half()
    with compute_in(big, torch.float32):
        assert all(m._forward_pre_hooks for m in big)
        assert all(p.dtype == torch.float16 for p in big.parameters())


STREAM_SCRIPT = """
import json, sys, torch
from torch.utils.data import DataLoader, Dataset
from fvc.core.memory import peak_rss_bytes
from fvc.infer.inference import load_export, predict

pool = torch.randint(0, 256, (4, 4, 3, 256, 256), dtype=torch.uint8)

class Cycled(Dataset):
    def __len__(self):
        return 400
    def __getitem__(self, index):
        return pool[index % 4], 0

model = load_export(sys.argv[1])
base = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) * 1024
open("/proc/self/clear_refs", "w").write("5")
probs, _ = predict(model, DataLoader(Cycled(), batch_size=2), torch.device("cpu"), sys.argv[2])
print(json.dumps({"increase": peak_rss_bytes() - base, "clips": len(probs)}))
"""


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_predict_holds_one_batch_at_a_time(tmp_path, precision):
    """200 batches of 1.5 MB (300 MB together) stream through: the peak rises by a fraction of that."""
    [path], _ = export_folds("logistic_regression", {"pool": 8}, 4, 256, tmp_path, folds=1)
    out = subprocess.run(
        [sys.executable, "-c", STREAM_SCRIPT, str(path), precision],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # auto's probe times each candidate on a few batches of its own (44 MB seen once on a loaded machine)
    assert result["clips"] == 400 and result["increase"] < 60 * MB, result["increase"] / MB
