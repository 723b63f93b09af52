"""Parameter counts per component and the check that exactly the declared components are trainable."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from fvc.core.errors import FvcError
from fvc.models.base import ClipClassifier

log = logging.getLogger(__name__)


class FreezingError(FvcError, RuntimeError):
    """Trainable parameters do not match the model's declaration."""


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


def check_trainable(model: ClipClassifier) -> list[dict[str, Any]]:
    """Log the report and raise FreezingError if a component with parameters is undeclared, or if any of its
    parameters' `requires_grad` differs from its declaration. Returns the report."""
    rows = trainable_report(model)
    problems = []
    names = {row["component"] for row in rows}
    for name in sorted(set(model.trainable) - names):
        problems.append(f"declared component {name!r} does not exist")
    for row in rows:
        log.info(
            "%s.%s: %d parameters, %d trainable, %d frozen",
            type(model).__name__,
            row["component"],
            row["total"],
            row["trainable"],
            row["frozen"],
        )
        declared = row["declared_trainable"]
        if declared is None:
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
