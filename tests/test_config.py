"""Config schema: defaults filled; typos and inconsistent model rows refused in one line naming the key."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from fvc.core import schema
from fvc.core.config import MODEL_NAMES, ConfigError, load_config, load_schema, model_specs, validate_config


def test_shipped_config_validates_and_fills_defaults(shipped_config: dict, project_root: Path) -> None:
    del shipped_config["download"]["retries"]
    validate_config(shipped_config)
    assert (
        shipped_config["download"]["retries"]
        == load_schema()["properties"]["download"]["properties"]["retries"]["default"]
    )
    loaded = load_config(project_root / "config.yaml")
    assert loaded["train"]["effective_batch"] == shipped_config["train"]["effective_batch"]


def test_every_model_has_a_row_that_keeps_the_effective_batch(shipped_config: dict) -> None:
    specs = model_specs(validate_config(shipped_config))
    assert set(specs) == set(MODEL_NAMES)
    for spec in specs.values():
        assert spec.effective_batch == shipped_config["train"]["effective_batch"], spec.name


def test_unknown_key_is_named_with_the_known_ones(shipped_config: dict) -> None:
    shipped_config["augment"]["num_frame"] = 8
    with pytest.raises(ConfigError) as error:
        validate_config(shipped_config, "my.yaml")
    known = ", ".join(load_schema()["properties"]["augment"]["properties"])
    assert str(error.value) == f"my.yaml: augment: unknown key 'num_frame' (known: {known})"
    assert "num_frames" in known


def test_every_error_is_named_on_one_line(shipped_config: dict) -> None:
    shipped_config["models"]["svm"]["mem_mb"] = "lots"
    shipped_config["folds"]["k"] = 1
    with pytest.raises(ConfigError) as error:
        validate_config(shipped_config, "my.yaml")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("my.yaml: folds.k: 1 is less than the minimum of 2; models.svm.mem_mb: 'lots'")


def test_batch_split_must_match_effective_batch(shipped_config: dict) -> None:
    shipped_config["models"]["naive_cnn"]["grad_accum_steps"] = 3
    with pytest.raises(ConfigError, match="naive_cnn.*grad_accum_steps 3"):
        validate_config(shipped_config)


def test_model_clip_cannot_exceed_augmented_clip(shipped_config: dict) -> None:
    shipped_config["models"]["naive_cnn"]["num_frames"] = shipped_config["augment"]["num_frames"] + 1
    with pytest.raises(ConfigError, match="augment.num_frames"):
        validate_config(shipped_config)


def test_trained_model_needs_a_row(shipped_config: dict) -> None:
    del shipped_config["models"]["naive_cnn"]
    with pytest.raises(ConfigError, match="naive_cnn"):
        validate_config(shipped_config)


@pytest.mark.parametrize("stage", ["train", "infer"])
def test_cuda_needs_gpus_in_every_trained_row(shipped_config: dict, stage: str) -> None:
    shipped_config[stage]["device"] = "cuda"
    for name in shipped_config["train"]["models"]:
        shipped_config["models"][name]["gpus"] = 1
    validate_config(shipped_config)
    shipped_config["models"]["naive_cnn"]["gpus"] = 0
    with pytest.raises(ConfigError) as error:
        validate_config(shipped_config, "my.yaml")
    assert str(error.value) == (
        f"my.yaml: {stage}.device is 'cuda' but models.naive_cnn.gpus is 0, so SLURM would give its jobs no "
        f"GPU; set models.naive_cnn.gpus to 1 or more, or {stage}.device to auto"
    )


def test_gpu_rows_are_typed_with_cpu_defaults(shipped_config: dict) -> None:
    shipped_config["models"]["x3d"] |= {"gpus": 2, "gpu_model": "a100", "cpus": 8, "vram_mb": 12000}
    specs = model_specs(validate_config(shipped_config))
    assert (specs["x3d"].gpus, specs["x3d"].gpu_model, specs["x3d"].cpus, specs["x3d"].vram_mb) == (
        2, "a100", 8, 12000
    )  # fmt: skip
    assert (specs["svm"].gpus, specs["svm"].cpus) == (0, 1)
    shipped_config["models"]["x3d"]["gpu_model"] = "'a100'"
    with pytest.raises(ConfigError, match=r"models\.x3d\.gpu_model"):
        validate_config(shipped_config)


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(path)


@pytest.mark.parametrize(
    ("function", "section"),
    [
        ("fvc.data.demo:make_demo_dataset", "dataset.demo"),
        ("fvc.data.download:download_all", "download"),
        ("fvc.clips.augment:augment_all", "augment"),
        ("fvc.clips.folds:make_folds", "folds"),
        ("fvc.train.training:train_fold", "train"),
        ("fvc.infer.inference:infer_model", "infer"),
        ("fvc.slurm.audit:audit_workflow", "audit"),
    ],
)
def test_stage_functions_repeat_no_config_default(function: str, section: str) -> None:
    """Defaults live in the schema alone: a stage function's parameter named after a key of its config
    section (or `seed`) has no default of its own: the rules and the command hand the config's value."""
    module, name = function.split(":")
    signature = inspect.signature(getattr(importlib.import_module(module), name))
    keys = set(schema.key_schema(section)["properties"]) | {"seed"}
    shared = [p for p in signature.parameters.values() if p.name in keys]
    assert shared, f"{name} takes none of the keys of {section}"
    assert [p.name for p in shared if p.default is not inspect.Parameter.empty] == []
