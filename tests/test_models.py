"""The model zoo: shapes, losses, freezing declarations, meta-device builds, gradient checkpointing."""

from __future__ import annotations

import pytest
import torch
from train_fixtures import tiny_params
from transformers import ViTConfig, ViTModel

from fvc.models import (
    MODEL_NAMES,
    FreezingError,
    build_model,
    check_trainable,
    export_config,
    non_persistent_buffers,
    scale_clips,
    trainable_report,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def clips(batch: int = 2, frames: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return scale_clips(
        torch.randint(0, 256, (batch, frames, size, size, 3), dtype=torch.uint8, generator=gen).permute(
            0, 1, 4, 2, 3
        )
    )


@pytest.fixture(scope="module")
def pretrained_vit(tmp_path_factory) -> str:
    """A tiny random ViT written with save_pretrained, standing in for a downloaded backbone."""
    folder = tmp_path_factory.mktemp("vit")
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward_and_declaration(name):
    model = build_model(name, tiny_params(name), 4, 32)
    logits = model(clips())
    assert logits.shape == (2,)
    loss = model.loss_fn(logits, torch.tensor([0.0, 1.0]))
    assert torch.isfinite(loss)
    loss.backward()
    rows = check_trainable(model)
    assert sum(r["trainable"] for r in rows) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert non_persistent_buffers(model) == []


@pytest.mark.parametrize("name", ["slowfast", "x3d"])
@pytest.mark.parametrize("frames", [4, 8])
def test_bf16_autocast_gradients_are_finite(name, frames):
    """Temporal kernels longer than a pathway's frames gave NaN bf16 weight gradients (oneDNN)."""
    torch.manual_seed(0)
    model = build_model(name, {}, frames, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(clips(frames=frames))
    model.loss_fn(logits, torch.tensor([0.0, 1.0])).backward()
    assert [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()] == []


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_meta_build_then_load_state_matches(name):
    torch.manual_seed(0)
    model = build_model(name, tiny_params(name), 4, 32).eval()
    config = export_config(name, model)
    with torch.device("meta"):
        rebuilt = build_model(config["model"], config["params"], config["num_frames"], config["size"])
    assert all(t.is_meta for t in rebuilt.state_dict().values())
    rebuilt.load_state_dict(model.state_dict(), assign=True, strict=True)
    rebuilt.eval()
    x = clips()
    torch.testing.assert_close(rebuilt(x), model(x))


def test_wrong_clip_shape_and_unknown_model():
    model = build_model("naive_cnn", tiny_params("naive_cnn"), 4, 32)
    with pytest.raises(ValueError, match=r"expects clips \[B, 4, 3, 32, 32\]"):
        model(clips(frames=3))
    with pytest.raises(KeyError, match="unknown model"):
        build_model("resnet", {}, 4, 32)


def test_losses_declared_by_model():
    logits, labels = torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])
    svm = build_model("svm", {}, 4, 32)
    assert svm.loss == "hinge"
    assert svm.loss_fn(logits, labels).item() == pytest.approx((1.0 + 3.0) / 2)
    logreg = build_model("logistic_regression", {}, 4, 32)
    assert logreg.loss == "bce"
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    assert logreg.loss_fn(logits, labels).item() == pytest.approx(expected.item())


@pytest.mark.parametrize("name", ["vit_gru", "vit_transformer"])
def test_pretrained_backbone_is_loaded_and_frozen(name, pretrained_vit):
    saved = ViTModel.from_pretrained(pretrained_vit, add_pooling_layer=False)
    head = {"temporal_heads": 2} if name == "vit_transformer" else {}
    model = build_model(name, {"backbone": pretrained_vit, **head}, 4, 32)
    torch.testing.assert_close(model.backbone.layers[0].mlp.fc1.weight, saved.layers[0].mlp.fc1.weight)
    report = {r["component"]: r for r in check_trainable(model)}
    assert report["backbone"]["trainable"] == 0 and report["backbone"]["frozen"] > 0
    assert report["head"]["frozen"] == 0 and report["head"]["trainable"] > 0
    if name == "vit_transformer":
        assert report["embedding"]["trainable"] > 0
        assert not any("patch_embeddings" in n for n, _ in model.named_parameters())
        # the tubelet embedding starts as the inflated 2-D patch projection
        inflated = model.embedding.proj.weight.sum(dim=2)
        torch.testing.assert_close(inflated, saved.embeddings.patch_embeddings.projection.weight)
    model.set_gradient_checkpointing(True)
    model.train().loss_fn(model(clips()), torch.tensor([0.0, 1.0])).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for name, p in model.named_parameters() if name.startswith("embedding."))
    assert all(p.grad is not None for p in model.head.parameters())


def test_freezing_violations_raise(pretrained_vit):
    model = build_model("vit_transformer", {"backbone": pretrained_vit, "temporal_heads": 2}, 4, 32)
    model.backbone.layernorm.weight.requires_grad_(True)
    with pytest.raises(FreezingError, match="'backbone' must be frozen"):
        check_trainable(model)
    model.backbone.layernorm.weight.requires_grad_(False)
    model.embedding.proj.bias.requires_grad_(False)
    with pytest.raises(FreezingError, match="'embedding' must be trainable"):
        check_trainable(model)
    model = build_model("naive_cnn", {}, 4, 32)
    model.extra = torch.nn.Linear(2, 2)
    with pytest.raises(FreezingError, match="'extra' has parameters but no trainable declaration"):
        check_trainable(model)
    assert [r["component"] for r in trainable_report(model)] == ["features", "head", "extra"]


def test_pretrained_export_rebuilds_without_backbone_folder(pretrained_vit):
    model = build_model("vit_gru", {"backbone": pretrained_vit}, 4, 32)
    config = export_config("vit_gru", model)
    assert "backbone" not in config["params"] and config["params"]["vit"]["hidden_size"] == 32
    assert config["params"]["freeze_backbone"] is True
    with torch.device("meta"):
        rebuilt = build_model("vit_gru", config["params"], 4, 32)
    rebuilt.load_state_dict(model.state_dict(), assign=True)
    x = clips()
    torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))


def test_missing_backbone_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a save_pretrained folder"):
        build_model("vit_gru", {"backbone": str(tmp_path / "nope")}, 4, 32)


@pytest.mark.parametrize("name", ["naive_cnn", "vit_transformer", "slowfast", "x3d"])
def test_gradient_checkpointing_gives_the_same_gradients(name):
    no_dropout = {"dropout": 0.0} if name in ("slowfast", "x3d") else {}  # the others have no dropout
    params = {**tiny_params(name), **no_dropout}
    torch.manual_seed(0)
    plain = build_model(name, params, 4, 32)
    torch.manual_seed(0)
    ckpt = build_model(name, params, 4, 32)
    ckpt.set_gradient_checkpointing(True)
    x, y = clips(), torch.tensor([0.0, 1.0])
    for model in (plain, ckpt):
        model.loss_fn(model(x), y).backward()
    for (n, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=n)


def test_table_rows_build_on_meta(shipped_config):
    for name, row in shipped_config["models"].items():
        with torch.device("meta"):
            model = build_model(name, row["params"], row["num_frames"], row["size"])
        check_trainable(model)
