"""The config schema read as plain data, without validating anything: a key's schema and defaults.

Light enough for argument parsing (YAML only); validation lives in `fvc.core.config`."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

SCHEMA_FILE = Path(__file__).with_name("config.schema.yaml")


@functools.cache
def schema() -> dict[str, Any]:
    """The config schema (package data), read with libyaml when present (7x faster)."""
    return yaml.load(SCHEMA_FILE.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def key_schema(key: str) -> dict[str, Any]:
    """The schema of a dotted key such as `folds.k`."""
    node = schema()
    for part in key.split("."):
        node = node["properties"][part]
    return node


def defaults(node: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config made of the schema's defaults alone (nested objects filled in)."""
    node = schema() if node is None else node
    config: dict[str, Any] = {}
    for name, sub in node.get("properties", {}).items():
        if "properties" in sub and "default" in sub:
            config[name] = {**sub["default"], **defaults(sub)}
        elif "default" in sub:
            config[name] = sub["default"]
    return config
