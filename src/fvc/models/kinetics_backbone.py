"""The backbone of x3d and slowfast: `blocks` in pytorchvideo's layout, filled from a Kinetics backbone file
(written by `fvc import-weights`, `fvc.weights.kinetics`) checked against the model's params, frozen as
declared, its last blocks unfrozen on request; fvc's new `head` always trains."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Self

import torch

from fvc.core.errors import FvcError
from fvc.models.base import ClipClassifier
from fvc.models.freezing import unfreeze_last_blocks
from fvc.weights.safetensors_io import read_header

#: The `format` metadata of a backbone file written by `fvc import-weights`.
FORMAT = "fvc-kinetics-backbone"


class KineticsError(FvcError, ValueError):
    """A checkpoint or backbone file that does not fit the model; the message names the file."""


def load_backbone(
    model: ClipClassifier, name: str, path: str | os.PathLike[str], architecture: Iterable[str]
) -> None:
    """Fill `model.blocks` from the backbone file at `path` (written by `import_weights`) and freeze it if
    `model.freeze_backbone`. On the meta device the file is not read (an export holds the backbone). A file
    of another model or preset than the params raises KineticsError naming `models.<name>.params.backbone`."""
    blocks = model.get_submodule("blocks")
    if torch.empty(0).device.type != "meta":
        key = f"models.{name}.params.backbone"
        if not Path(path).is_file():
            raise KineticsError(f"{key}: {path} does not exist (write it with fvc import-weights {name} ...)")
        _, metadata = read_header(path)
        if metadata.get("format") != FORMAT or metadata.get("model") != name:
            raise KineticsError(f"{key}: {path} is not a {name} backbone written by fvc import-weights")
        stored = json.loads(metadata["params"])
        differ = [a for a in architecture if stored.get(a) != model.params[a]]
        if differ:
            mismatch = ", ".join(
                f"{a} {stored.get(a)} in the file, {model.params[a]} in the params" for a in differ
            )
            raise KineticsError(f"{key}: {path} holds the {metadata.get('preset')} backbone: {mismatch}")
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        result = model.load_state_dict(tensors, strict=False)
        missing = [
            k
            for k in result.missing_keys
            if k.startswith("blocks.") and not k.endswith("num_batches_tracked")
        ]
        if missing or result.unexpected_keys:
            raise KineticsError(
                f"{key}: {path} does not fit the model ({len(missing)} missing, "
                f"{len(result.unexpected_keys)} unexpected tensors)"
            )
    blocks.requires_grad_(not model.params["freeze_backbone"])


class KineticsBackbone(ClipClassifier):
    """A model whose `blocks` are a Kinetics backbone and whose `head` is fvc's; subclasses build both, then
    call `attach_backbone`. Params `backbone`, `freeze_backbone`, `unfreeze_last_blocks`."""

    def attach_backbone(self, name: str, architecture: Iterable[str]) -> None:
        """Declare and freeze `blocks` as `freeze_backbone` says, fill them from the `backbone` file (if
        any; `architecture`: the params that fix its tensors), then unfreeze the last
        `unfreeze_last_blocks`."""
        self.freeze_backbone = bool(self.params["freeze_backbone"])
        self.get_submodule("blocks").requires_grad_(not self.freeze_backbone)
        self.trainable = {"blocks": not self.freeze_backbone, "head": True}
        if self.params["backbone"]:
            load_backbone(self, name, self.params["backbone"], architecture)
        count = int(self.params["unfreeze_last_blocks"])
        unfreeze_last_blocks(self, count, f"models.{name}.params.unfreeze_last_blocks")

    def train(self, mode: bool = True) -> Self:
        """A frozen backbone stays in eval mode (its BatchNorm statistics are the pretrained ones), but for
        its unfrozen blocks."""
        super().train(mode)
        self.keep_frozen_in_eval("blocks", mode)
        return self

    def export_params(self) -> dict[str, object]:
        """The params without the backbone file: the export holds the backbone's tensors."""
        return {k: v for k, v in self.params.items() if k != "backbone"}
