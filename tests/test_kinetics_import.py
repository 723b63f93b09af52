"""Kinetics backbones for x3d and slowfast: fvc's layout against pytorchvideo's builders (fixture layouts
written once by pytorchvideo 0.1.5's create_x3d / create_slowfast), `fvc import-weights` of synthetic
checkpoints in that layout, training with the imported backbone frozen, and the one-line errors."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from train_fixtures import ROOT, tiny_params, tiny_spec, write_dataset

from fvc.core.seeding import stable_seed
from fvc.models import build_model, slowfast, x3d
from fvc.train.training import train_fold
from fvc.weights.export import SHARED_DIR, index_path
from fvc.weights.kinetics import KineticsError, import_weights
from fvc.weights.lean_load import lean_load

pytestmark = pytest.mark.usefixtures("one_thread")

LAYOUTS = Path(__file__).parent / "fixtures" / "kinetics_layouts"
MODEL_OF = {"x3d_s": "x3d", "x3d_m": "x3d", "slowfast_r50": "slowfast"}
PROJECTION = {"x3d": "blocks.5.proj.", "slowfast": "blocks.6.proj."}
PRESETS = {**x3d.PRESETS, **slowfast.PRESETS}


def published_layout(preset: str) -> dict[str, list[int]]:
    return json.loads((LAYOUTS / f"{preset}.json").read_text())


def write_checkpoint(path: Path, layout: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in `layout`, saved as pytorchvideo's model zoo does (`{"model_state": ...}`)."""
    gen = torch.Generator().manual_seed(seed)
    state = {
        name: torch.randint(0, 50, shape, generator=gen)
        if name.endswith("num_batches_tracked")
        else torch.rand(shape, generator=gen) + 0.5  # positive: valid BatchNorm variances
        for name, shape in layout.items()
    }
    torch.save({"model_state": state, "epoch": 196}, path)
    return state


def fvc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fvc.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


@pytest.mark.parametrize("preset", list(MODEL_OF))
def test_backbone_layout_equals_pytorchvideo(preset):
    """Every tensor of pytorchvideo's model but the Kinetics projection, same name, shape and order; fvc adds
    only its head."""
    model = MODEL_OF[preset]
    with torch.device("meta"):
        built = build_model(
            model, PRESETS[preset], *slowfast.PRESET_CLIPS.get(preset, x3d.PRESET_CLIPS.get(preset))
        )
    ours = {k: list(v.shape) for k, v in built.state_dict().items()}
    published = {k: v for k, v in published_layout(preset).items() if not k.startswith(PROJECTION[model])}
    assert list(published.items()) == [(k, v) for k, v in ours.items() if not k.startswith("head.")]
    assert {k for k in ours if k not in published} == {"head.1.weight", "head.1.bias"}


@pytest.mark.parametrize("preset", list(MODEL_OF))
def test_import_weights_of_a_published_checkpoint(preset, tmp_path, caplog):
    """x3d_s through the `fvc` command, the others in-process (one interpreter start-up less each)."""
    model = MODEL_OF[preset]
    checkpoint = tmp_path / f"{preset.upper()}.pyth"
    state = write_checkpoint(checkpoint, published_layout(preset))
    out = tmp_path / "weights" / f"{preset}.safetensors"
    left_out = f"Kinetics head projection left out ({PROJECTION[model]}bias, {PROJECTION[model]}weight)"
    if preset == "x3d_s":
        result = fvc("import-weights", model, str(checkpoint), str(out), "--preset", preset)
        assert result.returncode == 0, result.stderr
        assert left_out in result.stderr and f"models.{model}.params: {{backbone: {out}" in result.stdout
    else:
        with caplog.at_level(logging.INFO, logger="fvc.weights.kinetics"):
            import_weights(model, checkpoint, out, preset)
        assert left_out in caplog.text
    written = load_file(str(out))
    assert written.keys() == {k for k in state if not k.startswith(PROJECTION[model])}
    assert all(torch.equal(written[k], state[k]) for k in written)
    with safe_open(str(out), "pt") as fh:
        meta = fh.metadata()
    assert meta["source"] == checkpoint.name and meta["model"] == model and meta["preset"] == preset
    assert meta["source_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert json.loads(meta["params"]) == PRESETS[preset]
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left


TINY = tiny_params("x3d")


@pytest.fixture
def tiny_preset(monkeypatch) -> str:
    """A tiny x3d size among the presets, so that a backbone import and training take seconds."""
    monkeypatch.setitem(x3d.PRESETS, "tiny", TINY)
    return "tiny"


def tiny_checkpoint(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A checkpoint in the published layout at the tiny size: fvc's backbone names plus a 400-class
    projection, as pytorchvideo's create_x3d at these sizes would write."""
    with torch.device("meta"):
        built = build_model("x3d", TINY, 4, 32)
    layout = {k: list(v.shape) for k, v in built.state_dict().items() if k.startswith("blocks.")}
    layout |= {"blocks.5.proj.weight": [400, TINY["head_dim"]], "blocks.5.proj.bias": [400]}
    return write_checkpoint(path, layout, seed)


def test_training_with_an_imported_backbone_changes_only_the_head(tiny_preset, tmp_path):
    state = tiny_checkpoint(tmp_path / "X3D_TINY.pyth")
    backbone = tmp_path / "x3d_tiny.safetensors"
    import_weights("x3d", tmp_path / "X3D_TINY.pyth", backbone, tiny_preset)
    root = tmp_path / "data"
    clips_csv, folds_csv = write_dataset(root, videos=8, num_frames=4, size=32)
    spec = tiny_spec("x3d", params={**TINY, "backbone": str(backbone)})
    exports = tmp_path / "models"
    for fold in (0, 1):
        train_fold(
            clips_csv,
            folds_csv,
            fold,
            spec,
            tmp_path / f"metrics{fold}.json",
            exports / f"fold{fold}.safetensors",
            tmp_path / f"checkpoints{fold}",
            root=root,
            device="cpu",
            seed=0,
            precision="fp32",
        )
    export = json.loads((exports / "fold0.json").read_text())
    assert "backbone" not in export["params"] and export["params"]["freeze_backbone"] is True
    rebuilt = lean_load(
        lambda: build_model(export["model"], export["params"], export["num_frames"], export["size"]),
        exports / "fold0.safetensors",
        dtype=torch.float32,
    )
    trained = rebuilt.state_dict()
    for name, tensor in trained.items():
        if name.startswith("blocks."):  # parameters and BatchNorm statistics: the pretrained ones
            expected = state[name].half().float() if tensor.is_floating_point() else state[name]
            assert torch.equal(tensor, expected), name
    torch.manual_seed(stable_seed(0, "x3d", 0, "init"))  # the head as training built it
    initial = build_model("x3d", spec.params, 4, 32).head.state_dict()
    assert not torch.equal(trained["head.1.weight"], initial["1.weight"].half().float())
    shared = list((exports / SHARED_DIR).iterdir())
    assert len(shared) == 1  # both folds share the frozen backbone
    for fold in (0, 1):
        weight_map = json.loads(index_path(exports / f"fold{fold}.safetensors").read_text())["weight_map"]
        assert weight_map["blocks.1.res_blocks.0.branch2.conv_a.weight"] == f"{SHARED_DIR}/{shared[0].name}"


def test_backbone_of_another_size_is_refused_naming_the_key(tiny_preset, tmp_path):
    tiny_checkpoint(tmp_path / "X3D_TINY.pyth")
    backbone = tmp_path / "x3d_tiny.safetensors"
    import_weights("x3d", tmp_path / "X3D_TINY.pyth", backbone, tiny_preset)
    built = build_model("x3d", {**TINY, "backbone": str(backbone)}, 4, 32)
    assert not any(p.requires_grad for p in built.blocks.parameters())
    assert all(p.requires_grad for p in built.head.parameters())
    with pytest.raises(
        KineticsError, match=r"^models\.x3d\.params\.backbone: .* holds the tiny backbone: head_dim 16 in"
    ):
        build_model("x3d", {**TINY, "head_dim": 32, "backbone": str(backbone)}, 4, 32)
    with torch.device("meta"):  # the file is not read on the meta device
        build_model("x3d", {**TINY, "backbone": str(tmp_path / "absent.safetensors")}, 4, 32)


class NotATensor:
    pass


@pytest.mark.parametrize("damage", ["renamed", "reshaped", "pickled_object"])
def test_a_damaged_checkpoint_gives_one_line_naming_file_and_key(damage, tiny_preset, tmp_path):
    checkpoint = tmp_path / "X3D_TINY.pyth"
    state = tiny_checkpoint(checkpoint)
    key = "blocks.1.res_blocks.0.branch2.conv_b.weight"
    if damage == "renamed":
        state["blocks.1.res_blocks.0.branch2.conv_bee.weight"] = state.pop(key)
        expected = (
            rf"1 missing \({key} \[.*; 1 unexpected \(blocks\.1\.res_blocks\.0\.branch2\.conv_bee\.weight"
        )
    elif damage == "reshaped":
        state[key] = torch.zeros(3, 1, 3, 3, 3)
        expected = rf"1 of another shape \({key} \[3, 1, 3, 3, 3\], tiny has \["
    else:
        state["epoch_info"] = NotATensor()  # type: ignore[assignment]
        expected = "torch.load\\(weights_only=True\\) refuses it"
    torch.save({"model_state": state}, checkpoint)
    out = tmp_path / "out.safetensors"
    with pytest.raises(KineticsError, match=rf"^{checkpoint}: .*{expected}") as info:
        import_weights("x3d", checkpoint, out, tiny_preset)
    assert "\n" not in str(info.value) and not out.exists()


def test_cli_error_is_one_line(tmp_path):
    checkpoint = tmp_path / "SLOWFAST_8x8_R50.pyth"
    torch.save({"model_state": {"blocks.0.conv.weight": torch.zeros(2)}}, checkpoint)
    result = fvc("import-weights", "slowfast", str(checkpoint), str(tmp_path / "out.safetensors"))
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"fvc import-weights: {checkpoint}: not a slowfast slowfast_r50 checkpoint")
    assert "missing (blocks.0.multipathway_blocks.0.conv.weight [" in line


def test_legacy_checkpoint_and_module_prefix_are_read(tiny_preset, tmp_path):
    """A pre-zip torch.save file (mmap cannot map it) of a DataParallel model (`module.` names) imports."""
    checkpoint = tmp_path / "X3D_TINY.pyth"
    state = tiny_checkpoint(checkpoint)
    wrapped = {f"module.{k}": v for k, v in state.items()}
    torch.save({"state_dict": wrapped}, checkpoint, _use_new_zipfile_serialization=False)
    import_weights("x3d", checkpoint, tmp_path / "out.safetensors", tiny_preset)
    written = load_file(str(tmp_path / "out.safetensors"))
    assert written.keys() == {k for k in state if not k.startswith("blocks.5.proj.")}
