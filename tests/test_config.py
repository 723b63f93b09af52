"""Config schema: defaults filled, typos and inconsistent model rows refused with the key's name."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from fvc.core.config import ConfigError, load_config, model_specs, validate_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_shipped_config_validates_and_fills_defaults(config: dict) -> None:
    del config["download"]["retries"]
    validate_config(config)
    assert config["download"]["retries"] == 3
    assert load_config(ROOT / "config.yaml")["train"]["effective_batch"] == 8


def test_every_model_has_a_row_that_keeps_the_effective_batch(config: dict) -> None:
    specs = model_specs(validate_config(config))
    assert set(specs) == {
        "logistic_regression",
        "svm",
        "naive_cnn",
        "vit_gru",
        "vit_transformer",
        "slowfast",
        "x3d",
    }
    for spec in specs.values():
        assert spec.effective_batch == config["train"]["effective_batch"], spec.name


def test_unknown_key_is_named(config: dict) -> None:
    config["augment"]["num_frame"] = 8
    with pytest.raises(ConfigError, match="(?s)augment.*num_frame"):
        validate_config(config, "my.yaml")


def test_wrong_type_names_the_key_and_file(config: dict) -> None:
    config["models"]["svm"]["mem_mb"] = "lots"
    with pytest.raises(ConfigError, match=r"(?s)my\.yaml.*models\.svm\.mem_mb"):
        validate_config(config, "my.yaml")


def test_batch_split_must_match_effective_batch(config: dict) -> None:
    bad = copy.deepcopy(config)
    bad["models"]["naive_cnn"]["grad_accum_steps"] = 3
    with pytest.raises(ConfigError, match="naive_cnn.*grad_accum_steps 3"):
        validate_config(bad)


def test_model_clip_cannot_exceed_augmented_clip(config: dict) -> None:
    config["models"]["naive_cnn"]["num_frames"] = config["augment"]["num_frames"] + 1
    with pytest.raises(ConfigError, match="augment.num_frames"):
        validate_config(config)


def test_trained_model_needs_a_row(config: dict) -> None:
    del config["models"]["naive_cnn"]
    with pytest.raises(ConfigError, match="naive_cnn"):
        validate_config(config)


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(path)
