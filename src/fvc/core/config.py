"""The workflow config: schema validation with defaults, and the typed per-model table."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.protocols import Validator

from fvc.core.errors import FvcError
from fvc.core.schema import schema

MODEL_NAMES = ("logistic_regression", "svm", "naive_cnn", "vit_gru", "vit_transformer", "slowfast", "x3d")


class ConfigError(FvcError, ValueError):
    """A config that does not validate; the message names the file and the key."""


def _with_defaults(validator_class: type[Validator]) -> type[Validator]:
    """A validator class that fills in each property's `default` before validating it."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: dict, instance: Any, schema: dict) -> Any:
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def load_schema() -> dict:
    """The config schema (package data) as a dict of one's own."""
    return copy.deepcopy(schema())


def describe_error(error: jsonschema.ValidationError) -> str:
    """`key.path: what is wrong`; an unknown key is named with the keys known at that place."""
    where = ".".join(map(str, error.absolute_path)) or "<top>"
    schema, instance = error.schema, error.instance
    if error.validator == "additionalProperties" and isinstance(schema, dict) and isinstance(instance, dict):
        known = schema.get("properties", {})
        unknown = ", ".join(repr(key) for key in instance if key not in known)
        return f"{where}: unknown key {unknown} (known: {', '.join(known) or 'none'})"
    return f"{where}: {error.message}"


def validate_config(config: dict, source: str = "config") -> dict:
    """Fill defaults into `config` in place, validate it and the model table; raise ConfigError (one line,
    naming `source` and every wrong key) on failure."""
    validator = _with_defaults(jsonschema.Draft202012Validator)(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError(f"{source}: " + "; ".join(describe_error(e) for e in errors))
    specs = model_specs(config, source)
    check_devices(config, specs, source)
    return config


def check_devices(config: dict, specs: dict[str, ModelSpec], source: str = "config") -> None:
    """`cuda` as train.device or infer.device needs a GPU in every trained model's row: refused here, before
    any job is submitted (a SLURM job without a GPU would fail on every retry)."""
    for stage in ("train", "infer"):
        if config.get(stage, {}).get("device") != "cuda":
            continue
        for name in config.get("train", {}).get("models", []):
            if specs[name].gpus == 0:
                raise ConfigError(
                    f"{source}: {stage}.device is 'cuda' but models.{name}.gpus is 0, so SLURM would give "
                    f"its jobs no GPU; set models.{name}.gpus to 1 or more, or {stage}.device to auto"
                )


def load_config(path: str | Path) -> dict:
    """Read a YAML config file, fill defaults and validate it."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return validate_config(config, str(path))


@dataclass(frozen=True)
class ModelSpec:
    """One row of the per-model table."""

    name: str
    batch_size: int
    grad_accum_steps: int
    num_frames: int
    size: int
    epochs: int
    lr: float
    mem_mb: int
    runtime: int
    infer_mem_mb: int
    num_workers: int | None = None
    gradient_checkpointing: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    gpus: int = 0
    gpu_model: str | None = None
    cpus: int = 1
    vram_mb: int | None = None
    tasks: int = 1

    @property
    def world_size(self) -> int:
        """Training processes of a job (DDP ranks): one per GPU with several GPUs, else `tasks`."""
        return self.gpus if self.gpus > 1 else self.tasks

    @property
    def effective_batch(self) -> int:
        """Samples per optimizer step, over all ranks."""
        return self.batch_size * self.grad_accum_steps * self.world_size


def model_specs(config: dict, source: str = "config") -> dict[str, ModelSpec]:
    """Typed rows of `config['models']`; every model in `train.models` needs a row whose batch split matches
    `train.effective_batch` and whose clip fits the augmented clips."""
    specs = {name: ModelSpec(name=name, **row) for name, row in config["models"].items()}
    train = config.get("train", {})
    clip = config.get("augment", {})
    for name in train.get("models", []):
        if name not in specs:
            raise ConfigError(f"{source}: train.models names {name!r}, but models.{name} has no row")
        spec = specs[name]
        if spec.gpus > 1 and spec.tasks not in (1, spec.gpus):
            raise ConfigError(
                f"{source}: models.{name}: tasks {spec.tasks} with gpus {spec.gpus}; a job runs one task "
                f"per GPU: set tasks to 1 or {spec.gpus}"
            )
        if spec.effective_batch != train["effective_batch"]:
            processes = f" x {spec.world_size} processes" if spec.world_size > 1 else ""
            raise ConfigError(
                f"{source}: models.{name}: batch_size {spec.batch_size} x grad_accum_steps "
                f"{spec.grad_accum_steps}{processes} = {spec.effective_batch}, but "
                f"train.effective_batch is {train['effective_batch']}"
            )
        if spec.num_frames > clip.get("num_frames", spec.num_frames) or spec.size > clip.get(
            "size", spec.size
        ):
            raise ConfigError(
                f"{source}: models.{name}: num_frames {spec.num_frames} / size {spec.size} exceed the "
                f"augmented clips' augment.num_frames {clip['num_frames']} / augment.size {clip['size']}"
            )
    return specs
