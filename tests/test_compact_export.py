"""Compact fold exports: frozen tensors stored once per content and shared by the folds, lean loading of both
files, the pre-flight's size, a killed export, and the headroom warning at the end of training."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from infer_data import randomize
from torch import nn
from train_fixtures import tiny_spec, write_dataset
from transformers import ViTConfig, ViTModel

from fvc.infer.preflight import estimate
from fvc.models.freezing import frozen_parameters
from fvc.train.headroom import check_headroom
from fvc.train.training import train_fold
from fvc.weights.export import SHARED_DIR, export_fp16, index_path
from fvc.weights.lean_load import lean_load, tensor_infos, weight_files

pytestmark = pytest.mark.usefixtures("one_thread")


class Frozen(nn.Module):
    """A frozen backbone (conv + batch norm, its running stats are buffers) and a trainable head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 1)
        self.backbone.requires_grad_(False)


def model(backbone_seed: int = 1, head_seed: int = 2) -> Frozen:
    built = Frozen()
    randomize(built.backbone, seed=backbone_seed)
    randomize(built.head, seed=head_seed)
    return built


def export(built: nn.Module, path: Path, **kwargs: object) -> None:
    export_fp16(built, {"model": "frozen"}, path, frozen=frozen_parameters(built), **kwargs)


def shared_files(folder: Path) -> list[Path]:
    return sorted((folder / SHARED_DIR).iterdir())


def assert_same_tensors(loaded: nn.Module, reference: nn.Module) -> None:
    state = loaded.state_dict()
    assert state.keys() == reference.state_dict().keys()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(state[name], tensor.half() if tensor.is_floating_point() else tensor), name


def test_folds_with_one_backbone_share_one_file_written_once(tmp_path):
    fold0, fold1 = model(head_seed=2), model(head_seed=3)
    export(fold0, tmp_path / "fold0.safetensors")
    (shared,) = shared_files(tmp_path)
    assert shared.name == hashlib.sha256(shared.read_bytes()).hexdigest() + ".safetensors"
    written = shared.stat()
    export(fold1, tmp_path / "fold1.safetensors")
    assert shared_files(tmp_path) == [shared]
    assert (shared.stat().st_ino, shared.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)

    for fold, built in enumerate((fold0, fold1)):
        weights = tmp_path / f"fold{fold}.safetensors"
        weight_map = json.loads(index_path(weights).read_text())["weight_map"]
        assert {n for n, f in weight_map.items() if f == f"{SHARED_DIR}/{shared.name}"} == {
            "backbone.0.weight",
            "backbone.0.bias",
            "backbone.1.weight",
            "backbone.1.bias",
        }
        own = [f for f in weight_map.values() if not f.startswith(SHARED_DIR)]
        assert set(own) == {f for f in own if f.startswith(f"fold{fold}-")}
        full = tmp_path / "full" / f"fold{fold}.safetensors"
        export_fp16(built, {"model": "frozen"}, full)
        assert weight_files(full) == [full]
        assert_same_tensors(lean_load(Frozen, weights), lean_load(Frozen, full))
        assert_same_tensors(lean_load(Frozen, weights), built)
        assert estimate([weights], 1, 1, 8).weights == estimate([full], 1, 1, 8).weights


def test_changed_backbone_gets_a_new_file_and_reexport_cleans_the_folds_parts(tmp_path):
    weights = tmp_path / "fold0.safetensors"
    export(model(backbone_seed=1), weights)
    (old,) = shared_files(tmp_path)
    own_before = {p.name for p in tmp_path.glob("fold0-*.safetensors")}
    changed = model(backbone_seed=5, head_seed=4)
    export(changed, weights)
    new = [p for p in shared_files(tmp_path) if p != old]
    assert len(new) == 1 and old.exists()  # another fold may still use the old one
    assert set(json.loads(index_path(weights).read_text())["weight_map"].values()) >= {
        f"shared/{new[0].name}"
    }
    assert not own_before & {p.name for p in tmp_path.glob("fold0-*.safetensors")}
    assert_same_tensors(lean_load(Frozen, weights), changed)

    export_fp16(changed, {"model": "frozen"}, weights)  # nothing frozen: one file, as before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fold0.json", "fold0.safetensors", SHARED_DIR]
    assert_same_tensors(lean_load(Frozen, weights), changed)


def test_trained_part_is_sharded_beside_the_shared_file(tmp_path):
    built = model()
    built.head = nn.Linear(8, 64)  # a 1 kB weight: the trained tensors need more than one 1 kB part
    weights = tmp_path / "fold0.safetensors"
    export_fp16(built, {}, weights, max_shard_bytes=1024, frozen=frozen_parameters(built))
    files = weight_files(weights)
    assert files[-1].parent.name == SHARED_DIR and len(files) > 2
    assert sum(info.nbytes for info in tensor_infos(weights).values()) == sum(
        t.numel() * 2 if t.is_floating_point() else t.numel() * t.element_size()
        for t in built.state_dict().values()
    )


def test_unknown_frozen_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="frozen tensors \\['nope'\\] are not in the state dict"):
        export_fp16(model(), {}, tmp_path / "fold0.safetensors", frozen={"nope"})


KILL_AT_INDEX = """
import os, signal, sys
import fvc.weights.export as export
from test_compact_export import model
from fvc.models.freezing import frozen_parameters

write_bytes = export.write_bytes
def killed_at_index(path, data):
    if str(path).endswith(".index.json"):
        os.kill(os.getpid(), signal.SIGKILL)
    write_bytes(path, data)
export.write_bytes = killed_at_index
built = model(backbone_seed=9, head_seed=7)
export.export_fp16(built, {}, sys.argv[1], frozen=frozen_parameters(built))
"""


@pytest.mark.parametrize("old_compact", [True, False])
def test_export_killed_before_the_index_leaves_the_old_one(tmp_path, old_compact):
    weights = tmp_path / "fold0.safetensors"
    old = model(backbone_seed=1, head_seed=2)
    export_fp16(old, {}, weights, frozen=frozen_parameters(old) if old_compact else ())
    before = sorted(p.name for p in tmp_path.rglob("*.safetensors"))
    path = os.pathsep.join([str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", KILL_AT_INDEX, str(weights)], env=env, capture_output=True)
    assert done.returncode == -9, done.stderr.decode()
    after = sorted(p.name for p in tmp_path.rglob("*.safetensors"))
    assert set(before) < set(after)  # the new parts were written, none of the old ones replaced
    assert_same_tensors(lean_load(Frozen, weights), old)
    new = model(backbone_seed=9, head_seed=7)
    export(new, weights)  # the rerun completes the new set
    assert_same_tensors(lean_load(Frozen, weights), new)


def test_headroom_warning_names_the_key(caplog):
    caplog.set_level(logging.WARNING, "fvc.train.headroom")
    assert check_headroom("vit_gru", 1000, 600.0, 300) is None
    message = check_headroom("vit_gru", 1000, 632.0, 300)
    assert message is not None and "models.vit_gru.mem_mb = 1000 MB" in message
    assert "632 MB + Snakemake overhead 300 MB = 932 MB leaves 7 %" in message
    assert "at least 1036" in message
    assert caplog.messages == [message]


@pytest.fixture(scope="module")
def pretrained_vit(tmp_path_factory) -> str:
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


def test_trained_folds_share_the_pretrained_backbone(tmp_path, pretrained_vit, caplog):
    root = tmp_path / "clips"
    clips_csv, folds_csv = write_dataset(root, videos=12, augmentations=1, num_frames=4, size=32)
    spec = tiny_spec("vit_gru", mem_mb=100, params={"backbone": pretrained_vit, "gru_hidden": 8})
    exports = tmp_path / "exports"
    caplog.set_level(logging.WARNING, "fvc.train.headroom")
    for fold in (0, 1):
        train_fold(
            clips_csv,
            folds_csv,
            fold,
            spec,
            tmp_path / f"metrics{fold}.json",
            exports / f"fold{fold}.safetensors",
            tmp_path / f"checkpoints{fold}",
            device="cpu",
            seed=0,
            precision="fp32",
            root=root,
            snakemake_overhead_mb=300,
        )
    (shared,) = shared_files(exports)
    backbone = ViTModel.from_pretrained(pretrained_vit, add_pooling_layer=False)
    assert {name for name in tensor_infos(shared)} == {f"backbone.{n}" for n in backbone.state_dict()}
    assert len(caplog.messages) == 2 and "models.vit_gru.mem_mb = 100 MB" in caplog.messages[0]
