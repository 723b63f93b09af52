"""Atomic epoch and step checkpoints: safetensors tensor files + one JSON state that names them.

Layout of a checkpoint folder: `{group}.epoch{N:04d}.safetensors` per tensor group (e.g. `model`,
`optimizer`, `best`) and `state.json`. A step checkpoint (written when a job is told to stop within an
epoch) has `step` S in its state (batches of epoch N done; None in an epoch checkpoint, where `epoch` is the
last one completed), files `{group}.epoch{N:04d}.step{S:06d}.safetensors`, and a `step` group (the
accumulated gradients and the epoch's losses so far) that the next epoch checkpoint drops.

Each file is written atomically (`fvc.core.atomic`); `state.json` is written last and is the only thing a
reader trusts, so a job killed at any moment leaves either the previous complete checkpoint or the new one.
Files no longer named by `state.json` (and temporary files of a killed job) are removed after it is written.
No pickle anywhere: optimizer state is flattened to tensors + JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fvc.core.atomic import atomic_path, remove_stale_temps, write_text
from fvc.weights.safetensors_io import LoadError, read_header

STATE = "state.json"
#: The group only a step checkpoint has.
STEP_GROUP = "step"


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write `tensors` (moved to CPU, contiguous) as safetensors at `path`, atomically."""
    needed = sum(t.numel() * t.element_size() for t in tensors.values())
    with atomic_path(path, needed) as tmp:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp))


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as JSON at `path`, atomically."""
    write_text(path, json.dumps(obj, indent=1))


def load_state(checkpoint_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The last complete checkpoint's state, or None when there is none."""
    path = Path(checkpoint_dir) / STATE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LoadError(f"{path}: corrupt checkpoint state ({exc}); delete the folder to start over") from exc
    for group, name in state.get("files", {}).items():
        if not (path.parent / name).is_file():
            raise LoadError(
                f"{path}: names {group} file {name}, which is missing; delete the folder to start over"
            )
    return state


def load_tensors(
    checkpoint_dir: str | os.PathLike[str], state: dict[str, Any], group: str
) -> dict[str, torch.Tensor]:
    """The tensors of `group` in the checkpoint described by `state` (LoadError naming a damaged file)."""
    path = Path(checkpoint_dir) / state["files"][group]
    read_header(path)
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise LoadError(f"{path}: cannot read ({exc}); delete the checkpoint folder to start over") from exc


def save_checkpoint(
    checkpoint_dir: str | os.PathLike[str],
    epoch: int,
    groups: dict[str, dict[str, torch.Tensor]],
    state: dict[str, Any],
    step: int | None = None,
) -> dict[str, Any]:
    """Write the tensor `groups` of `epoch` (at `step` of it for a step checkpoint), then `state.json` (with
    `epoch`, `step` and `files`); groups not given keep the file the previous state named, but for the step
    group, which an epoch checkpoint drops. Returns the state written."""
    folder = Path(checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    previous = load_state(folder) or {}
    files = {k: v for k, v in previous.get("files", {}).items() if step is not None or k != STEP_GROUP}
    suffix = f".epoch{epoch:04d}" + ("" if step is None else f".step{step:06d}")
    for group, tensors in groups.items():
        name = f"{group}{suffix}.safetensors"
        write_tensors(folder / name, tensors)
        files[group] = name
    state = {**state, "epoch": epoch, "step": step, "files": files}
    write_json(folder / STATE, state)
    for path in folder.glob("*.safetensors"):
        if path.name not in files.values():
            path.unlink()
    remove_stale_temps(folder)
    return state


def flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state dict as tensors (`state.{param}.{key}`) + the JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"param_groups": state_dict["param_groups"], "state": {}}
    for idx, entry in state_dict["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{key}"] = value
            else:
                meta["state"].setdefault(str(idx), {})[key] = value
    return tensors, meta


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta["state"].items():
        state.setdefault(int(idx), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}
