"""Each model's `params` has its own schema: typos are refused naming the key, and the schema lists exactly
the keyword arguments of the model's builder."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch

from fvc.core.config import ConfigError, load_schema, validate_config
from fvc.models import BUILDERS, MODEL_NAMES, build_model

# Values for the params whose default is None (no value to take from the signature).
EXAMPLES: dict[str, Any] = {
    "backbone": "backbones/vit-tiny",
    "freeze_backbone": True,
    "vit": {"hidden_size": 32},
}


def builder_params(name: str) -> dict[str, inspect.Parameter]:
    """The builder's keyword-only arguments: the model's params."""
    parameters = inspect.signature(BUILDERS[name]).parameters.values()
    return {p.name: p for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def params_schema(name: str) -> dict:
    """The schema that `models.<name>.params` is checked against, found through the model's row."""
    schema = load_schema()
    ref = schema["properties"]["models"]["properties"][name]["properties"]["params"]["$ref"]
    node = schema
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_schema_lists_exactly_the_builder_keyword_arguments(name):
    schema = params_schema(name)
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(builder_params(name)), (
        f"{name}: the params schema and the builder's keyword arguments differ; update "
        "src/fvc/core/config.schema.yaml definitions.params"
    )


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_builder_argument_is_accepted(name, shipped_config):
    defaults = {key: EXAMPLES.get(key, p.default) for key, p in builder_params(name).items()}
    params = {key: list(value) if isinstance(value, tuple) else value for key, value in defaults.items()}
    shipped_config["models"][name]["params"] = params
    validate_config(shipped_config)
    row = shipped_config["models"][name]
    buildable = {key: value for key, value in params.items() if key != "backbone"}  # no folder to load
    with torch.device("meta"):
        model = build_model(name, buildable, row["num_frames"], row["size"])
    assert {key: model.params[key] for key in buildable} == buildable


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_typo_in_params_is_refused_naming_the_key(name, shipped_config):
    key = sorted(builder_params(name))[0]
    typo = key[:-1]
    shipped_config["models"][name]["params"] = {typo: 1}
    with pytest.raises(ConfigError) as error:
        validate_config(shipped_config, "config.yaml")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"config.yaml: models.{name}.params: unknown key {typo!r} (known: ")
    assert all(known in message for known in builder_params(name))


def test_wrong_param_type_names_the_key(shipped_config):
    shipped_config["models"]["x3d"]["params"]["depths"] = "1,1,2,1"
    with pytest.raises(ConfigError, match=r"^my\.yaml: models\.x3d\.params\.depths: '1,1,2,1' is not of"):
        validate_config(shipped_config, "my.yaml")


def test_builder_refuses_an_unknown_param():
    with pytest.raises(TypeError, match="backbon"):
        build_model("vit_gru", {"backbon": "folder"}, 4, 32)
