"""Lean loading: meta build + tensor-by-tensor fill from fp16 exports, single and sharded; clear refusals."""

from __future__ import annotations

import pytest
import torch
from infer_data import randomize
from safetensors.torch import save_file
from torch import nn
from transformers import BertConfig, BertModel, ViTConfig, ViTModel

from fvc.weights.export import export_fp16
from fvc.weights.lean_load import LoadError, lean_load, tensor_infos, weight_files


class Mixed(nn.Module):
    """Conv + batch norm + GRU + linear, with a non-persistent buffer computed at init."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.norm = nn.BatchNorm2d(width)
        self.gru = nn.GRU(width, width, batch_first=True)
        self.head = nn.Linear(width, 1)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, width), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, T, 3, H, W]
        b, t = x.shape[:2]
        feats = self.norm(self.conv(x.flatten(0, 1))).mean((2, 3)) * self.scale
        out, _ = self.gru(feats.reshape(b, t, -1))
        return self.head(out[:, -1]).squeeze(-1)


def assert_lean(model: nn.Module) -> None:
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        assert not tensor.is_meta, name
        if tensor.is_floating_point():
            assert tensor.dtype == torch.float16, name
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training


@pytest.mark.parametrize("shard", [None, 600])
def test_round_trip_matches_in_memory_model(tmp_path, shard):
    reference = randomize(Mixed(), seed=1).eval()
    weights = tmp_path / "fold0.safetensors"
    export_fp16(reference, {}, weights, max_shard_bytes=shard)
    assert (len(weight_files(weights)) > 1) == bool(shard)
    loaded = lean_load(Mixed, weights)
    assert_lean(loaded)
    torch.testing.assert_close(loaded.scale, reference.scale.half())  # rebuilt, not left on meta
    x = torch.rand(2, 3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = reference(x)
        got = loaded(x.half()).float()
    torch.testing.assert_close(got, expected, atol=2e-2, rtol=2e-2)


def test_transformers_models_round_trip(tmp_path):
    vit_config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=16,
        patch_size=8,
    )
    vit = randomize(ViTModel(vit_config), seed=2, std=0.02).eval()
    export_fp16(vit, {}, tmp_path / "vit.safetensors", max_shard_bytes=20_000)
    loaded = lean_load(lambda: ViTModel(vit_config), tmp_path / "vit.safetensors.index.json")
    assert_lean(loaded)
    pixels = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(
            loaded(pixels.half()).pooler_output.float(), vit(pixels).pooler_output, atol=1e-2, rtol=1e-2
        )

    bert_config = BertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=50,
        max_position_embeddings=16,
    )
    bert = BertModel(bert_config).eval()
    export_fp16(bert, {}, tmp_path / "bert.safetensors")
    loaded = lean_load(lambda: BertModel(bert_config), tmp_path / "bert.safetensors")
    assert torch.equal(loaded.embeddings.position_ids, torch.arange(16).expand(1, -1))  # non-persistent
    ids = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(
            loaded(ids).last_hidden_state.float(), bert(ids).last_hidden_state, atol=1e-2, rtol=1e-2
        )


class Small(nn.Module):
    def __init__(self, out: int = 3) -> None:
        super().__init__()
        self.a = nn.Linear(4, out)
        self.b = nn.Linear(out, 1)


def test_missing_unexpected_misshaped_are_named(tmp_path):
    weights = tmp_path / "w.safetensors"
    tensors = {
        "a.weight": torch.zeros(3, 4),
        "a.bias": torch.zeros(3),
        "b.weight": torch.zeros(1, 3),
        "b.bias": torch.zeros(1),
    }
    save_file({k: v for k, v in tensors.items() if k != "b.bias"} | {"c.weight": torch.zeros(2)}, weights)
    with pytest.raises(LoadError) as err:
        lean_load(Small, weights)
    message = str(err.value)
    assert str(weights) in message
    assert "missing tensors ['b.bias']" in message
    assert "unexpected tensors c.weight (in w.safetensors)" in message

    save_file(tensors, weights)
    with pytest.raises(LoadError, match=r"mis-shaped tensors a\.bias: file \[3\] vs model \[5\]"):
        lean_load(lambda: Small(out=5), weights)
    model = lean_load(Small, weights)  # the fp32 file loads, cast to fp16 tensor by tensor
    assert model.a.weight.dtype == torch.float16


def test_pickle_and_garbage_refused(tmp_path):
    for suffix in (".pt", ".bin", ".pth", ".ckpt"):
        path = tmp_path / f"model{suffix}"
        path.write_bytes(b"\x80\x04K\x01.")  # a real pickle stream: never opened
        with pytest.raises(LoadError, match="pickle checkpoints"):
            lean_load(Small, path)
    garbage = tmp_path / "model.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(LoadError, match="not a safetensors file"):
        tensor_infos(garbage)
    with pytest.raises(LoadError, match="not found"):
        lean_load(Small, tmp_path / "absent.safetensors")


def test_sharded_index_with_missing_shard(tmp_path):
    weights = tmp_path / "fold0.safetensors"
    export_fp16(Small(), {}, weights, max_shard_bytes=20)
    shards = weight_files(weights)
    assert len(shards) == 2
    shards[-1].unlink()
    with pytest.raises(LoadError, match=f"shard {shards[-1].name} is missing"):
        lean_load(Small, weights)
