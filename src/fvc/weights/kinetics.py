"""Kinetics-pretrained backbones for `x3d` and `slowfast`: `fvc import-weights` turns a published
pytorchvideo checkpoint (X3D_S.pyth, X3D_M.pyth, SLOWFAST_8x8_R50.pyth) into a safetensors backbone once;
the models' `backbone` param loads it.

Import: the checkpoint is read with `torch.load(weights_only=True)` (no pickled code runs), its
`model_state` (or `state_dict`, or the dict itself) is checked name by name and shape by shape against fvc's
model built on the meta device at the preset (fvc's backbone has pytorchvideo's layout), the Kinetics
400-class projection is left out, and the backbone is written atomically with metadata: source file, its
sha256, model, preset and the preset's params. Loading checks those params against the configured ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fvc.core.atomic import atomic_path
from fvc.models.kinetics_backbone import FORMAT, KineticsError

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import ModuleType


log = logging.getLogger(__name__)

# The Kinetics head's class projection in each model's published layout: not part of fvc's backbone.
KINETICS_PROJECTION = {"x3d": "blocks.5.proj.", "slowfast": "blocks.6.proj."}


def model_module(model: str) -> ModuleType:
    """The module of `model` (its `PRESETS`, the published sizes as params, and `ARCHITECTURE`)."""
    from fvc.models import slowfast, x3d

    modules = {"x3d": x3d, "slowfast": slowfast}
    if model not in modules:
        raise KineticsError(f"import-weights: no Kinetics checkpoints for {model!r} (only x3d, slowfast)")
    return modules[model]


def _shapes(names: Iterable[str], shapes: dict[str, tuple[int, ...]], count: int = 3) -> str:
    shown = sorted(names)[:count]
    return ", ".join(f"{n} {list(shapes[n])}" for n in shown) + (", ..." if len(list(names)) > count else "")


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors by name (`module.` prefix stripped), read without running pickled code."""
    try:
        try:
            obj = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, weights_only=True, map_location="cpu")  # a pre-zip (legacy) file
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise KineticsError(f"{path}: torch.load(weights_only=True) refuses it: {reason}") from exc
    except (RuntimeError, OSError, EOFError) as exc:
        raise KineticsError(f"{path}: not a torch checkpoint ({str(exc).splitlines()[0]})") from exc
    state = obj
    if isinstance(obj, dict):
        state = obj.get("model_state", obj.get("state_dict", obj))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise KineticsError(f"{path}: no tensors by name (model_state, state_dict or a plain state dict)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def import_weights(
    model: str, checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], preset: str | None = None
) -> dict[str, Any]:
    """Check `checkpoint` against `model` at `preset` (default: the model's first) and write its backbone to
    `out`. Returns what was written (tensors, bytes, left-out names, metadata)."""
    from fvc.models import build_model

    module = model_module(model)
    known = module.PRESETS
    preset = preset or next(iter(known))
    if preset not in known:
        raise KineticsError(f"import-weights: unknown {model} preset {preset!r}; known: {', '.join(known)}")
    params = known[preset]
    path = Path(checkpoint)
    state = read_checkpoint(path)
    with torch.device("meta"):
        fvc_model = build_model(model, params, 4 * int(params.get("alpha", 1)), 64)
    expected = {k: tuple(v.shape) for k, v in fvc_model.state_dict().items() if k.startswith("blocks.")}
    found = {k: tuple(v.shape) for k, v in state.items()}
    projection = [k for k in found if k.startswith(KINETICS_PROJECTION[model])]
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = set(expected) - set(found) - optional
    unexpected = set(found) - set(expected) - set(projection)
    wrong = {k for k in set(expected) & set(found) if expected[k] != found[k]}
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({_shapes(missing, expected)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_shapes(unexpected, found)})")
    if wrong:
        first = sorted(wrong)[0]
        problems.append(
            f"{len(wrong)} of another shape "
            f"({first} {list(found[first])}, {preset} has {list(expected[first])})"
        )
    if problems:
        raise KineticsError(
            f"{path}: not a {model} {preset} checkpoint in pytorchvideo's layout: " + "; ".join(problems)
        )
    if projection:
        log.info("%s: Kinetics head projection left out (%s)", path, ", ".join(sorted(projection)))
    tensors = {k: state[k].contiguous() for k in expected if k in state}
    metadata = {
        "format": FORMAT,
        "source": path.name,
        "source_sha256": _sha256(path),
        "model": model,
        "preset": preset,
        "params": json.dumps({a: fvc_model.params[a] for a in module.ARCHITECTURE}, sort_keys=True),
    }
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    from safetensors.torch import save_file

    with atomic_path(out, needed=nbytes) as tmp:
        save_file(tensors, str(tmp), metadata)
    return {"tensors": len(tensors), "bytes": nbytes, "left_out": sorted(projection), "metadata": metadata}
