"""fp16 export of a trained model: safetensors written tensor by tensor (maybe in parts) + its JSON config.

Layout for `weights_path = .../fold0.safetensors`:

- one file: `fold0.safetensors` holds every tensor (floating ones cast to fp16), when nothing is frozen and
  no `max_shard_bytes` is exceeded.
- in parts: the tensors training changed (trainable parameters and buffers) go to `fold0-<hash>.safetensors`
  (several when `max_shard_bytes` is exceeded), the frozen parameters to
  `shared/<sha256>.safetensors`, one file per content that every fold with the same frozen backbone shares
  (written once: skipped when a file with that hash is already there). The index
  `fold0.safetensors.index.json` (`{"metadata": {"total_size"}, "weight_map": {tensor: file}}`, as
  transformers writes it, file names relative to it) lists them, and `fold0.safetensors` itself is a valid
  safetensors file with no tensors whose metadata `fvc_index` names the index, so the path a workflow
  declares always exists and loads.

Every part is named by its content (sha256 of its bytes), so a new export never overwrites a file the old one
uses: the parts are written first, the index last (it is the commit point; a full `fold0.safetensors`, which
names no index, wins over a stale index), and only then are the fold's unused parts removed. A killed export
leaves the old or the new complete set. Shared files are never removed (other folds may use them). The
config goes to `fold0.json`. Every file is written atomically (`fvc.core.atomic`). Headers come from
`fvc.weights.safetensors_io`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from fvc.core.atomic import atomic_open, write_bytes
from fvc.weights.safetensors_io import encode_header

Named = list[tuple[str, torch.Tensor]]

INDEX_KEY = "fvc_index"
#: Folder (next to the exports) of the frozen tensors, one file per content.
SHARED_DIR = "shared"
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


def _part_pattern(weights_path: Path) -> re.Pattern[str]:
    """Names of a fold's own parts: `fold0-<16 hex digits>.safetensors`."""
    return re.compile(rf"{re.escape(weights_path.stem)}-[0-9a-f]{{16}}{re.escape(weights_path.suffix)}")


def _export_dtype(tensor: torch.Tensor) -> torch.dtype:
    """fp16 for floating tensors, the tensor's own dtype otherwise."""
    return torch.float16 if tensor.is_floating_point() else tensor.dtype


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * _export_dtype(tensor).itemsize


def _header(tensors: Named, metadata: dict[str, str]) -> bytes:
    """The safetensors header of the export-dtype tensors, in their order."""
    entries = [(name, SAFETENSORS_DTYPES[_export_dtype(t)], tuple(t.shape)) for name, t in tensors]
    return encode_header(entries, metadata)


def _cast(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor in its export dtype, contiguous on the CPU."""
    return tensor.detach().to(device="cpu", dtype=_export_dtype(tensor)).contiguous()


def _write_tensor(fh: IO[bytes], tensor: torch.Tensor) -> None:
    """Cast one tensor to its export dtype on the CPU and append its raw bytes."""
    fh.write(_cast(tensor).reshape(-1).view(torch.uint8).numpy().data)


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=2).encode("utf-8") + b"\n"


def write_safetensors(path: Path, tensors: Named, metadata: dict[str, str]) -> None:
    """Stream `tensors` into a safetensors file, casting floating ones to fp16 one at a time."""
    header = _header(tensors, metadata)
    with atomic_open(path, needed=len(header) + sum(_nbytes(t) for _, t in tensors)) as fh:
        fh.write(header)
        for _, tensor in tensors:
            _write_tensor(fh, tensor)


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


def _digest(tensors: Named, metadata: dict[str, str]) -> str:
    """sha256 of the safetensors file `write_safetensors` would write (cast one tensor at a time)."""
    digest = hashlib.sha256(_header(tensors, metadata))
    for _, tensor in tensors:
        digest.update(_cast(tensor).reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_by_content(
    folder: Path, prefix: str, tensors: Named, metadata: dict[str, str], digits: int
) -> Path:
    """Write `tensors` to `folder/<prefix><first digits of their sha256>.safetensors`, unless that file is
    already there with that content. Returns its path."""
    digest = _digest(tensors, metadata)
    path = folder / f"{prefix}{digest[:digits]}.safetensors"
    if path.is_file() and _file_digest(path) == digest:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(path, tensors, metadata)
    return path


def _remove_stale_parts(weights_path: Path, keep: set[str]) -> None:
    """Delete the fold's own parts of an earlier export that the new one does not use."""
    pattern = _part_pattern(weights_path)
    for old in weights_path.parent.iterdir():
        if pattern.fullmatch(old.name) and old.name not in keep:
            old.unlink()


def export_fp16(
    model: nn.Module,
    export_config: dict,
    weights_path: str | os.PathLike[str],
    max_shard_bytes: int | None = None,
    frozen: Collection[str] = (),
) -> None:
    """Write `model`'s state dict as fp16 safetensors at `weights_path` and `export_config` (with
    `"dtype": "float16"`) as JSON next to it. The state-dict entries named in `frozen` (parameters training
    left unchanged) go to a shared file by content; the others are split at `max_shard_bytes`."""
    weights_path = Path(weights_path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = list(model.state_dict().items())
    for name, tensor in tensors:
        if _export_dtype(tensor) not in SAFETENSORS_DTYPES:
            raise TypeError(f"{weights_path}: tensor {name!r}: no safetensors dtype for {tensor.dtype}")
    frozen = set(frozen)
    unknown = sorted(frozen - {name for name, _ in tensors})
    if unknown:
        raise ValueError(f"{weights_path}: frozen tensors {unknown[:5]} are not in the state dict")
    metadata = {"format": "pt"}
    config = {**export_config, "dtype": "float16"}
    write_bytes(config_path(weights_path), _json_bytes(config))

    shared = [(name, t) for name, t in tensors if name in frozen]
    trained = [(name, t) for name, t in tensors if name not in frozen]
    shards = _split(trained, max_shard_bytes) if max_shard_bytes else [trained]
    if not shared and len(shards) == 1:
        write_safetensors(weights_path, tensors, metadata)
        index_path(weights_path).unlink(missing_ok=True)
        _remove_stale_parts(weights_path, keep=set())
        return
    folder = weights_path.parent
    prefix = f"{weights_path.stem}-"
    parts = [(write_by_content(folder, prefix, shard, metadata, 16), shard) for shard in shards if shard]
    if shared:
        parts.append((write_by_content(folder / SHARED_DIR, "", shared, metadata, 64), shared))
    weight_map = {name: path.relative_to(folder).as_posix() for path, part in parts for name, _ in part}
    index = {"metadata": {"total_size": sum(_nbytes(t) for _, t in tensors)}, "weight_map": weight_map}
    index_file = index_path(weights_path)
    write_bytes(index_file, _json_bytes(index))
    write_safetensors(weights_path, [], {**metadata, INDEX_KEY: index_file.name})
    _remove_stale_parts(weights_path, keep={path.name for path, _ in parts})
