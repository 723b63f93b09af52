"""fp16 export of a trained model: safetensors written tensor by tensor (maybe sharded) + its JSON config.

Layout for `weights_path = .../fold0.safetensors`:

- one file: `fold0.safetensors` holds every tensor (floating ones cast to fp16).
- sharded (`max_shard_bytes` exceeded): `fold0-00001-of-00003.safetensors`, ... next to it, the index
  `fold0.safetensors.index.json` (`{"metadata": {"total_size"}, "weight_map": {tensor: shard}}`, as
  transformers writes it), and `fold0.safetensors` itself is a valid safetensors file with no tensors whose
  metadata `fvc_index` names the index, so the path a workflow declares always exists and loads.

The config goes to `fold0.json`. Every file is written to a temporary name and moved into place with
`os.replace`; the file at `weights_path` is written last, so its presence means the export is complete.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

Named = list[tuple[str, torch.Tensor]]

INDEX_KEY = "fvc_index"
SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def index_path(weights_path: str | os.PathLike[str]) -> Path:
    """The shard index next to `weights_path` (`fold0.safetensors.index.json`)."""
    path = Path(weights_path)
    return path.with_name(path.name + ".index.json")


def config_path(weights_path: str | os.PathLike[str]) -> Path:
    """The export config next to `weights_path` (same stem, `.json`)."""
    return Path(weights_path).with_suffix(".json")


def shard_name(weights_path: str | os.PathLike[str], number: int, total: int) -> str:
    """Shard file name in transformers' style: `fold0-00001-of-00003.safetensors`."""
    path = Path(weights_path)
    return f"{path.stem}-{number:05d}-of-{total:05d}{path.suffix}"


def _export_dtype(tensor: torch.Tensor) -> torch.dtype:
    """fp16 for floating tensors, the tensor's own dtype otherwise."""
    return torch.float16 if tensor.is_floating_point() else tensor.dtype


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * _export_dtype(tensor).itemsize


def _header(tensors: Named, metadata: dict[str, str]) -> bytes:
    """The safetensors header (8-byte little-endian length + JSON padded to 8 bytes) for the fp16 tensors."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, tensor in tensors:
        size = _nbytes(tensor)
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[_export_dtype(tensor)],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def _write_tensor(fh: BinaryIO, tensor: torch.Tensor) -> None:
    """Cast one tensor to its export dtype on the CPU and append its raw bytes."""
    data = tensor.detach().to(device="cpu", dtype=_export_dtype(tensor)).contiguous()
    fh.write(data.reshape(-1).view(torch.uint8).numpy().data)


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=2).encode("utf-8") + b"\n"


def _atomic_write(path: Path, write: Any) -> None:
    """Call `write(fh)` on a temporary file next to `path`, fsync it and move it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_safetensors(path: Path, tensors: Named, metadata: dict[str, str]) -> None:
    """Stream `tensors` into a safetensors file, casting floating ones to fp16 one at a time."""

    def write(fh: BinaryIO) -> None:
        fh.write(_header(tensors, metadata))
        for _, tensor in tensors:
            _write_tensor(fh, tensor)

    _atomic_write(path, write)


def _split(tensors: Iterable[tuple[str, torch.Tensor]], max_shard_bytes: int) -> list[Named]:
    """Greedy split in state-dict order; a tensor larger than the limit gets a shard of its own."""
    shards: list[Named] = [[]]
    size = 0
    for name, tensor in tensors:
        nbytes = _nbytes(tensor)
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, tensor))
        size += nbytes
    return shards


def _remove_stale_shards(weights_path: Path, keep: set[str]) -> None:
    """Delete shards of an earlier export of the same path that the new one does not use."""
    stem = re.escape(weights_path.stem)
    pattern = re.compile(rf"{stem}-\d{{5}}-of-\d{{5}}{re.escape(weights_path.suffix)}")
    for old in weights_path.parent.iterdir():
        if pattern.fullmatch(old.name) and old.name not in keep:
            old.unlink()


def export_fp16(
    model: nn.Module,
    export_config: dict,
    weights_path: str | os.PathLike[str],
    max_shard_bytes: int | None = None,
) -> None:
    """Write `model`'s state dict as fp16 safetensors at `weights_path` (sharded when larger than
    `max_shard_bytes`) and `export_config` (with `"dtype": "float16"`) as JSON next to it."""
    weights_path = Path(weights_path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = list(model.state_dict().items())
    for name, tensor in tensors:
        if _export_dtype(tensor) not in SAFETENSORS_DTYPES:
            raise TypeError(f"{weights_path}: tensor {name!r}: no safetensors dtype for {tensor.dtype}")
    metadata = {"format": "pt"}
    config = {**export_config, "dtype": "float16"}
    _atomic_write(config_path(weights_path), lambda fh: fh.write(_json_bytes(config)))

    shards = _split(tensors, max_shard_bytes) if max_shard_bytes else [tensors]
    if len(shards) == 1:
        write_safetensors(weights_path, tensors, metadata)
        index_path(weights_path).unlink(missing_ok=True)
        _remove_stale_shards(weights_path, keep=set())
        return
    names = [shard_name(weights_path, i + 1, len(shards)) for i in range(len(shards))]
    weight_map: dict[str, str] = {}
    for name, shard in zip(names, shards, strict=True):
        write_safetensors(weights_path.with_name(name), shard, metadata)
        weight_map.update({tensor_name: name for tensor_name, _ in shard})
    index = {"metadata": {"total_size": sum(_nbytes(t) for _, t in tensors)}, "weight_map": weight_map}
    index_file = index_path(weights_path)
    _atomic_write(index_file, lambda fh: fh.write(_json_bytes(index)))
    write_safetensors(weights_path, [], {**metadata, INDEX_KEY: index_file.name})
    _remove_stale_shards(weights_path, keep=set(names))
