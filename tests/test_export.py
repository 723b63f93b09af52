"""fp16 export: single file and sharded layouts, dtypes, config JSON, atomicity, stale shards."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch
from safetensors import safe_open
from torch import nn

from fvc.weights.export import export_fp16, index_path

CONFIG = {"model": "naive_cnn", "params": {"widths": [4]}, "num_frames": 4, "size": 16}


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.LazyLinear(2)).eval()


@pytest.fixture
def model() -> nn.Module:
    model = small_model()
    model(torch.zeros(1, 3, 6, 6))  # materialize the lazy layer
    return model


def read_all(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(path, framework="pt") as fh:
        return {name: fh.get_tensor(name) for name in fh.keys()}, fh.metadata()  # noqa: SIM118


def test_single_file_fp16_and_config(model, tmp_path):
    weights = tmp_path / "models" / "naive_cnn" / "fold0.safetensors"
    export_fp16(model, CONFIG, weights)
    tensors, metadata = read_all(weights)
    state = model.state_dict()
    assert tensors.keys() == state.keys()
    assert metadata["format"] == "pt"
    for name, tensor in tensors.items():
        expected_dtype = torch.float16 if state[name].is_floating_point() else state[name].dtype
        assert tensor.dtype == expected_dtype, name
        assert torch.equal(tensor, state[name].to(expected_dtype)), name
    assert tensors["1.num_batches_tracked"].dtype == torch.int64
    assert json.loads((weights.parent / "fold0.json").read_text()) == {**CONFIG, "dtype": "float16"}
    assert sorted(p.name for p in weights.parent.iterdir()) == ["fold0.json", "fold0.safetensors"]


def test_sharded_export_and_reexport_cleans_up(model, tmp_path):
    weights = tmp_path / "fold1.safetensors"
    export_fp16(model, CONFIG, weights, max_shard_bytes=256)
    index = json.loads(index_path(weights).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3
    assert all(re.fullmatch(r"fold1-[0-9a-f]{16}\.safetensors", shard) for shard in shards)
    assert index["weight_map"].keys() == model.state_dict().keys()
    stored = {}
    for shard in shards:
        tensors, _ = read_all(tmp_path / shard)
        assert all(index["weight_map"][name] == shard for name in tensors)
        assert (
            shard == f"fold1-{hashlib.sha256((tmp_path / shard).read_bytes()).hexdigest()[:16]}.safetensors"
        )
        stored.update(tensors)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in stored.values())
    stub, metadata = read_all(weights)  # the declared path stays a valid safetensors file
    assert stub == {} and metadata["fvc_index"] == "fold1.safetensors.index.json"

    export_fp16(model, CONFIG, weights)  # unsharded again: old shards and index are gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fold1.json", "fold1.safetensors"]
    assert read_all(weights)[0].keys() == model.state_dict().keys()


def test_failed_export_keeps_previous_file(model, tmp_path):
    weights = tmp_path / "fold0.safetensors"
    export_fp16(model, CONFIG, weights)
    before = weights.read_bytes()
    bad = nn.Linear(2, 2)
    bad.register_buffer("odd", torch.zeros(2, dtype=torch.complex64))
    with pytest.raises(TypeError, match="odd"):
        export_fp16(bad, CONFIG, weights)
    assert weights.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
