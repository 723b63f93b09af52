"""Parameter counts per component, the check that exactly the declared parameters are trainable, and the
unfreezing of a frozen backbone's last blocks."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from fvc.core.errors import FvcError
from fvc.models.base import ClipClassifier

log = logging.getLogger(__name__)


class FreezingError(FvcError, RuntimeError):
    """Trainable parameters do not match the model's declaration."""


class UnfreezeError(FvcError, ValueError):
    """An `unfreeze_last_blocks` setting the model cannot honour."""


def unfreeze_last_blocks(model: ClipClassifier, count: int, setting: str) -> None:
    """Make the last `count` of `model.backbone_blocks()` and its `backbone_tail()` trainable, and declare the
    component as trained only there. `setting` (e.g. `models.vit_gru.params.unfreeze_last_blocks`) names the
    config key in the one-line UnfreezeError for a count out of range or a component that is not frozen."""
    blocks = model.backbone_blocks()
    if not 0 <= count <= len(blocks):
        raise UnfreezeError(
            f"{setting} is {count}, but {type(model).__name__}'s backbone has {len(blocks)} blocks "
            f"(0 to {len(blocks)})"
        )
    if count == 0:
        return
    names = blocks[len(blocks) - count :] + model.backbone_tail()
    component = names[0].split(".", 1)[0]
    if model.trainable.get(component) is not False:
        raise UnfreezeError(
            f"{setting} is {count}, but {component} is not frozen (it trains in full already)"
        )
    for name in names:
        model.get_submodule(name).requires_grad_(True)
    model.trainable[component] = tuple(name.split(".", 1)[1] for name in names)


def _inside(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def trainable_report(model: ClipClassifier) -> list[dict[str, Any]]:
    """One row per top-level component: total / trainable / frozen parameter counts and the declaration."""
    rows = []
    for name, child in model.named_children():
        params = list(child.parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad)
        total = sum(p.numel() for p in params)
        rows.append(
            {
                "component": name,
                "total": total,
                "trainable": trainable,
                "frozen": total - trainable,
                "declared_trainable": model.trainable.get(name),
            }
        )
    return rows


def _partly_trainable(component: str, child: nn.Module, blocks: tuple[str, ...]) -> list[str]:
    """Problems of a component declared trainable only in `blocks` (submodule names inside it)."""
    problems = []
    modules = dict(child.named_modules())
    for block in blocks:
        if block not in modules or next(modules[block].parameters(), None) is None:
            problems.append(f"declared trainable block {component}.{block} has no parameters")
    wrong = [name for name, p in child.named_parameters() if p.requires_grad != _inside(name, blocks)]
    if wrong:
        problems.append(
            f"component {component!r} must train exactly {', '.join(blocks)} but {len(wrong)} parameters "
            f"differ ({', '.join(wrong[:3])}{', ...' if len(wrong) > 3 else ''})"
        )
    return problems


def check_trainable(model: ClipClassifier) -> list[dict[str, Any]]:
    """Log the report and raise FreezingError if a component with parameters is undeclared, or if any of its
    parameters' `requires_grad` differs from its declaration (a component declared with block names: exactly
    the parameters inside those blocks train). Returns the report."""
    rows = trainable_report(model)
    problems = []
    names = {row["component"] for row in rows}
    for name in sorted(set(model.trainable) - names):
        problems.append(f"declared component {name!r} does not exist")
    for row in rows:
        declared = row["declared_trainable"]
        log.info(
            "%s.%s: %d parameters, %d trainable%s, %d frozen",
            type(model).__name__,
            row["component"],
            row["total"],
            row["trainable"],
            f" (only {', '.join(declared)})" if isinstance(declared, tuple) else "",
            row["frozen"],
        )
        if isinstance(declared, tuple):
            problems += _partly_trainable(row["component"], model.get_submodule(row["component"]), declared)
        elif declared is None:
            if row["total"]:
                problems.append(f"component {row['component']!r} has parameters but no trainable declaration")
        elif declared and row["trainable"] != row["total"]:
            problems.append(
                f"component {row['component']!r} must be trainable but has {row['frozen']} frozen"
            )
        elif not declared and row["trainable"]:
            problems.append(
                f"component {row['component']!r} must be frozen but has {row['trainable']} trainable"
            )
    if not any(p.requires_grad for p in model.parameters()):
        problems.append("no trainable parameters at all")
    if problems:
        raise FreezingError(f"{type(model).__name__}: " + "; ".join(problems))
    return rows


def frozen_parameters(model: nn.Module) -> set[str]:
    """State-dict names of the parameters training leaves unchanged (`requires_grad` off), tied names too:
    what a fold's export stores once, shared (`fvc.weights.export.export_fp16`'s `frozen`)."""
    return {name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}


def non_persistent_buffers(model: nn.Module) -> list[str]:
    """Buffers missing from the state dict (these would be lost when a meta-built model loads weights)."""
    saved = set(model.state_dict())
    return [name for name, _ in model.named_buffers() if name not in saved]
