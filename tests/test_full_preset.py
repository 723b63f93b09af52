"""configs/full.yaml, the real-size preset: valid once merged over config.yaml as Snakemake merges
`--configfile`, every row keeps the effective batch, and its ViT rows are ViT-B/16 at 224 px."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from snakemake.utils import update_config

from fvc.core.config import ConfigError, model_specs, validate_config
from fvc.models import build_model

ROOT = Path(__file__).resolve().parents[1]
FULL = ROOT / "configs" / "full.yaml"


def preset() -> dict:
    return yaml.safe_load(FULL.read_text())


def merged(shipped_config: dict, overlay: dict) -> dict:
    update_config(shipped_config, overlay)
    return validate_config(shipped_config, "config.yaml + configs/full.yaml")


def test_full_preset_validates_over_config_yaml(shipped_config):
    config = merged(shipped_config, preset())
    specs = model_specs(config)
    rows = preset()["models"]
    assert set(config["train"]["models"]) <= set(rows)
    for name in rows:
        spec = specs[name]
        assert spec.size == config["augment"]["size"] == 224, name
        assert 8 <= spec.num_frames <= config["augment"]["num_frames"] <= 16, name
        assert spec.effective_batch == config["train"]["effective_batch"], name
        if spec.gpus:
            assert spec.vram_mb, f"{name}: a GPU row states its vram_mb"


def test_a_row_breaking_the_effective_batch_is_refused(shipped_config):
    overlay = preset()
    overlay["models"]["vit_gru"]["grad_accum_steps"] += 1
    with pytest.raises(ConfigError, match=r"models\.vit_gru: batch_size 4 x grad_accum_steps 5 = 20, but"):
        merged(shipped_config, overlay)


@pytest.mark.parametrize("name", ["vit_gru", "vit_transformer"])
def test_vit_rows_are_a_frozen_vit_base_16_on_a_backbone_folder(name, shipped_config):
    spec = model_specs(merged(shipped_config, preset()))[name]
    assert spec.params["backbone"] and spec.params["freeze_backbone"] is True
    without_folder = {key: value for key, value in spec.params.items() if key != "backbone"}
    with torch.device("meta"):
        model = build_model(name, without_folder, spec.num_frames, spec.size)
    config = model.backbone.config
    vit_b = (
        config.hidden_size,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.intermediate_size,
    )
    assert vit_b == (768, 12, 12, 3072) and config.patch_size == 16
    assert 85_000_000 < sum(p.numel() for p in model.backbone.parameters()) < 87_000_000
