"""`unfreeze_last_blocks`: with a frozen backbone exactly its last N encoder layers (and its final layernorm)
train besides the new parts, `check_trainable` verifies that, a wrong count is one line naming the key, and a
fold's compact export holds the unfrozen layers while the shared file holds the rest."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from train_fixtures import tiny_params, tiny_spec, write_dataset

from fvc.models import FreezingError, build_model, check_trainable
from fvc.models.freezing import UnfreezeError, frozen_parameters
from fvc.train.training import train_fold
from fvc.weights.export import SHARED_DIR, config_path
from fvc.weights.lean_load import lean_load, tensor_infos, weight_files

pytestmark = pytest.mark.usefixtures("one_thread")

VIT_MODELS = ("vit_gru", "vit_transformer")
NEW_PARTS = {"vit_gru": ("head",), "vit_transformer": ("embedding", "head")}
TWO_LAYERS = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def frozen_params(name: str, unfreeze: int) -> dict:
    """Tiny params of a random two-layer ViT declared frozen, with its last `unfreeze` layers unfrozen."""
    return {**tiny_params(name), "vit": TWO_LAYERS, "freeze_backbone": True, "unfreeze_last_blocks": unfreeze}


def frozen_vit(name: str, unfreeze: int) -> torch.nn.Module:
    return build_model(name, frozen_params(name, unfreeze), 4, 32)


def expected_trainable(name: str, layers: int, unfreeze: int) -> tuple[str, ...]:
    """Name prefixes of the parameters that must train: the new parts, the last layers, the final norm."""
    tail = [f"backbone.layers.{i}." for i in range(layers - unfreeze, layers)]
    return (*(f"{part}." for part in NEW_PARTS[name]), *tail, *(["backbone.layernorm."] if unfreeze else []))


def changed_by_one_step(model: torch.nn.Module) -> set[str]:
    """Parameters that one SGD step over *all* parameters changes (frozen ones get no gradient)."""
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    clips = torch.rand(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model.loss_fn(model(clips), torch.tensor([0.0, 1.0])).backward()
    optimizer.step()
    return {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}


@pytest.mark.parametrize("name", VIT_MODELS)
@pytest.mark.parametrize("unfreeze", [0, 1, 2])
def test_exactly_the_last_blocks_and_new_parts_train(name, unfreeze):
    model = frozen_vit(name, unfreeze)
    layers = len(model.backbone.layers)
    assert layers == 2 and model.backbone_blocks() == ["backbone.layers.0", "backbone.layers.1"]
    check_trainable(model)
    expected = {
        n for n, _ in model.named_parameters() if n.startswith(expected_trainable(name, layers, unfreeze))
    }
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected
    assert changed_by_one_step(model) == expected
    assert frozen_parameters(model) == {n for n, _ in model.named_parameters()} - expected


@pytest.mark.parametrize("name", VIT_MODELS)
def test_more_blocks_than_the_backbone_has_is_one_line_naming_the_key(name):
    with pytest.raises(UnfreezeError) as error:
        frozen_vit(name, 3)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"models.{name}.params.unfreeze_last_blocks is 3, but ")
    assert "has 2 blocks" in message


def test_unfreezing_a_backbone_that_is_not_frozen_is_refused():
    params = {**frozen_params("vit_gru", 1), "freeze_backbone": False}
    with pytest.raises(
        UnfreezeError, match=r"^models\.vit_gru\.params\.unfreeze_last_blocks is 1, .* not frozen"
    ):
        build_model("vit_gru", params, 4, 32)


@pytest.mark.parametrize("name", VIT_MODELS)
def test_wrongly_declared_models_fail_the_check(name):
    earlier_block = frozen_vit(name, 1)
    earlier_block.backbone.layers[0].mlp.fc1.weight.requires_grad_(True)
    with pytest.raises(
        FreezingError, match=r"must train exactly layers\.1, layernorm but 1 parameters differ"
    ):
        check_trainable(earlier_block)
    frozen_block = frozen_vit(name, 1)
    frozen_block.backbone.layernorm.requires_grad_(False)
    with pytest.raises(FreezingError, match=r"2 parameters differ \(layernorm\.weight, layernorm\.bias\)"):
        check_trainable(frozen_block)
    missing_block = frozen_vit(name, 1)
    missing_block.trainable["backbone"] = ("layers.1", "layernorm", "layers.7")
    with pytest.raises(
        FreezingError, match=r"declared trainable block backbone\.layers\.7 has no parameters"
    ):
        check_trainable(missing_block)


def test_trained_fold_exports_the_unfrozen_block_in_its_own_part(tmp_path, caplog):
    root = tmp_path / "clips"
    clips_csv, folds_csv = write_dataset(root, videos=12, augmentations=1, num_frames=4, size=32)
    spec = tiny_spec("vit_gru", params=frozen_params("vit_gru", 1))
    weights = tmp_path / "exports" / "fold0.safetensors"
    caplog.set_level(logging.INFO, "fvc.models.freezing")
    train_fold(
        clips_csv,
        folds_csv,
        0,
        spec,
        tmp_path / "metrics.json",
        weights,
        tmp_path / "checkpoints",
        device="cpu",
        seed=0,
        precision="fp32",
        root=root,
    )
    assert any("trainable (only layers.1, layernorm)" in message for message in caplog.messages)
    files = weight_files(weights)
    (shared,) = [f for f in files if f.parent.name == SHARED_DIR]
    own = {name for f in files if f != shared for name in tensor_infos(f)}
    unfrozen = ("backbone.layers.1.", "backbone.layernorm.", "head.")
    model = frozen_vit("vit_gru", 1)
    assert own == {n for n in model.state_dict() if n.startswith(unfrozen)}
    assert set(tensor_infos(shared)) == {n for n in model.state_dict() if not n.startswith(unfrozen)}
    exported = json.loads(config_path(weights).read_text())
    assert exported["params"]["unfreeze_last_blocks"] == 1
    loaded = lean_load(
        lambda: build_model(exported["model"], exported["params"], exported["num_frames"], exported["size"]),
        weights,
    )
    assert loaded.trainable["backbone"] == ("layers.1", "layernorm")


KINETICS_MODELS = {"x3d": (4, 32), "slowfast": (8, 32)}


@pytest.mark.parametrize("name", KINETICS_MODELS)
@pytest.mark.parametrize("unfreeze", [0, 1, 2])
def test_kinetics_models_train_exactly_their_last_blocks_and_keep_the_rest_in_eval(name, unfreeze):
    frames, size = KINETICS_MODELS[name]
    params = {**tiny_params(name), "freeze_backbone": True, "unfreeze_last_blocks": unfreeze}
    model = build_model(name, params, frames, size)
    check_trainable(model)
    unfrozen = model.backbone_blocks()[len(model.backbone_blocks()) - unfreeze :]
    unfrozen += model.backbone_tail() if unfreeze else []
    prefixes = ("head.", *(f"{block}." for block in unfrozen))
    expected = {n for n, _ in model.named_parameters() if n.startswith(prefixes)}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected
    model.train()
    training = {n for n, m in model.named_modules() if m.training and n.startswith("blocks.")}
    assert training == {n for n in training if n.startswith(tuple(unfrozen))}
    assert all(model.get_submodule(block).training for block in unfrozen)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    clips = torch.rand(2, frames, 3, size, size, generator=torch.Generator().manual_seed(0))
    model.loss_fn(model(clips), torch.tensor([0.0, 1.0])).backward()
    optimizer.step()
    assert {n for n, p in model.named_parameters() if not torch.equal(p, before[n])} == expected


@pytest.mark.parametrize("name", KINETICS_MODELS)
def test_kinetics_models_refuse_more_blocks_than_they_have(name):
    frames, size = KINETICS_MODELS[name]
    params = {**tiny_params(name), "freeze_backbone": True, "unfreeze_last_blocks": 99}
    with pytest.raises(UnfreezeError, match=rf"^models\.{name}\.params\.unfreeze_last_blocks is 99, but "):
        build_model(name, params, frames, size)
