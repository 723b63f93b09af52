"""Lean loading of safetensors weights into a module built on the meta device: no state dict, no fp32 copy.

The module is built without memory (`torch.device("meta")`); each file is opened with `safe_open` and every
tensor is read (safetensors hands out views of its memory map, so reading costs no extra copy), cast to fp16
when it is a floating tensor of another dtype, moved to the device and assigned in place. Non-persistent
buffers (absent from a state dict, e.g. transformers' position ids) are rebuilt by the module's own init code
in a second build whose parameters go to the meta device. Pickle checkpoints are refused: never unpickled.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from fvc.weights.export import INDEX_KEY
from fvc.weights.safetensors_io import LoadError, TensorInfo, read_header

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise LoadError(
            f"{path}: pickle checkpoints ({', '.join(PICKLE_SUFFIXES)}) are never loaded (unpickling runs "
            "arbitrary code); export the weights as safetensors (fvc.weights.export.export_fp16)"
        )


def _index_files(index: Path) -> list[Path]:
    """Shard files of a transformers-style index JSON, in first-use order."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LoadError(f"{index}: not a safetensors index with a weight_map: {exc}") from exc
    files = [index.parent / name for name in dict.fromkeys(weight_map.values())]
    for file in files:
        _refuse_pickle(file)
        if not file.is_file():
            raise LoadError(f"{index}: shard {file.name} is missing")
    return files


def weight_files(path: str | os.PathLike[str]) -> list[Path]:
    """The safetensors file(s) holding the weights: one file, or the files of an index (given directly, or
    named by an fvc export's `fvc_index` metadata, or found as `<path>.index.json`), e.g. a compact export's
    own part and its `shared/` frozen tensors."""
    path = Path(path)
    _refuse_pickle(path)
    if path.name.endswith(".index.json"):
        return _index_files(path)
    if not path.is_file():
        index = path.with_name(path.name + ".index.json")
        if index.is_file():
            return _index_files(index)
        raise LoadError(f"{path}: weights file not found")
    _, metadata = read_header(path)
    if INDEX_KEY in metadata:
        return _index_files(path.parent / metadata[INDEX_KEY])
    return [path]


def tensor_infos(path: str | os.PathLike[str]) -> dict[str, TensorInfo]:
    """Every tensor of a (possibly sharded) checkpoint, from the headers only."""
    infos: dict[str, TensorInfo] = {}
    for file in weight_files(path):
        tensors, _ = read_header(file)
        duplicated = sorted(infos.keys() & tensors.keys())
        if duplicated:
            raise LoadError(f"{file}: tensors {duplicated[:5]} also stored in another shard")
        infos.update(tensors)
    return infos


def check_tensors(model: nn.Module, infos: dict[str, TensorInfo], source: str | os.PathLike[str]) -> None:
    """Raise LoadError naming the missing, unexpected and mis-shaped tensors of `source` for `model`."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict(keep_vars=True).items()}
    problems = []
    missing = sorted(expected.keys() - infos.keys())
    if missing:
        problems.append(f"missing tensors {missing}")
    unexpected = sorted(infos.keys() - expected.keys())
    if unexpected:
        where = [f"{name} (in {infos[name].file.name})" for name in unexpected]
        problems.append("unexpected tensors " + ", ".join(where))
    shaped = [
        f"{n}: file {list(infos[n].shape)} vs model {list(expected[n])} (in {infos[n].file.name})"
        for n in sorted(expected.keys() & infos.keys())
        if infos[n].shape != expected[n]
    ]
    if shaped:
        problems.append("mis-shaped tensors " + "; ".join(shaped))
    if problems:
        raise LoadError(f"{source}: does not fit {type(model).__name__}: " + "; ".join(problems))


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Replace the parameter or buffer `name` of `model` by `tensor` (setattr keeps e.g. RNN flat weights)."""
    owner_name, _, leaf = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    if leaf in owner._parameters:
        setattr(owner, leaf, nn.Parameter(tensor, requires_grad=False))
    elif leaf in owner._buffers:
        setattr(owner, leaf, tensor)
    else:
        raise LoadError(f"{name}: neither a parameter nor a buffer of {type(owner).__name__}")


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Build modules whose parameters go to the meta device as they are registered, while buffers are real."""
    register = nn.Module.register_parameter

    def to_meta(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.data.to("meta"), requires_grad=param.requires_grad)
        register(self, name, param)

    nn.Module.register_parameter = to_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def _restore_meta_buffers(
    model: nn.Module, build: Callable[[], nn.Module], device: torch.device, dtype: torch.dtype
) -> None:
    """Fill the buffers left on meta (non-persistent ones) from a build with meta parameters, real buffers."""
    left = [name for name, buffer in model.named_buffers() if buffer.is_meta]
    if not left:
        return
    with parameters_on_meta():
        donors = dict(build().named_buffers())
    for name in left:
        buffer = donors[name]
        _assign(model, name, buffer.to(device, dtype) if buffer.is_floating_point() else buffer.to(device))


def lean_load(
    build: Callable[[], nn.Module],
    weights_path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float16,
) -> nn.Module:
    """Build `build()` on the meta device and fill it tensor by tensor from the safetensors weights at
    `weights_path` (single file, fvc export or sharded index); floating tensors end in `dtype`. Eval mode."""
    device = torch.device(device)
    infos = tensor_infos(weights_path)
    with torch.device("meta"):
        model = build()
    check_tensors(model, infos, weights_path)
    for file in weight_files(weights_path):
        try:
            with safe_open(file, framework="pt", device="cpu") as fh:
                for name in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                    tensor = fh.get_tensor(name)
                    if tensor.is_floating_point() and tensor.dtype != dtype:
                        tensor = tensor.to(dtype)
                    _assign(model, name, tensor.to(device))
                    del tensor
        except (OSError, SafetensorError) as exc:
            raise LoadError(f"{file}: cannot read ({exc})") from exc
    _restore_meta_buffers(model, build, device, dtype)
    still_meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:
        raise LoadError(f"{weights_path}: tensors left on the meta device after loading: {still_meta}")
    return model.eval()
