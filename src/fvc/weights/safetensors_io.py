"""The safetensors header codec: the one place that encodes and decodes the header every fvc safetensors
file starts with (clips, checkpoints, fp16 exports).

Layout: an 8-byte little-endian header length, the header JSON padded with spaces to a multiple of 8 bytes,
then the tensors' raw bytes back to back. The header maps each tensor name to `{"dtype", "shape",
"data_offsets": [begin, end]}` (offsets into the data section) plus an optional `__metadata__` of strings.
fvc writes it canonically (sorted keys, compact), so the same tensors give the same bytes in every run.

`read_header` checks everything safetensors itself would refuse (length prefix, JSON, known dtypes, each
span's size against its shape, spans that tile the data section exactly, the file's size) and raises a
one-line `LoadError` naming the file, instead of letting the Rust reader fail with a traceback."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fvc.core.errors import FvcError

if TYPE_CHECKING:
    import torch

ALIGN = 8
MAX_HEADER_BYTES = 100 * 1024 * 1024
METADATA_KEY = "__metadata__"
DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")


class LoadError(FvcError, ValueError):
    """A file that cannot be loaded; the message names it (and the tensors, when they are the problem)."""


def _numel(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as a safetensors header describes it (no data read)."""

    file: Path
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Bytes stored in the file."""
        return DTYPE_BYTES[self.dtype] * _numel(self.shape)

    def loaded_nbytes(self, dtype: torch.dtype | None = None) -> int:
        """Bytes once loaded: floating tensors in `dtype` (default fp16), others as stored."""
        if self.dtype in FLOAT_DTYPES:
            return (2 if dtype is None else dtype.itemsize) * _numel(self.shape)
        return self.nbytes


def encode_header(
    tensors: Iterable[tuple[str, str, Sequence[int]]], metadata: dict[str, str] | None
) -> bytes:
    """The length prefix and padded canonical header for `(name, dtype, shape)` tensors whose data follows
    in the order given."""
    header: dict[str, Any] = {} if metadata is None else {METADATA_KEY: dict(metadata)}
    offset = 0
    for name, dtype, shape in tensors:
        if name in header:
            raise ValueError(f"tensor name {name!r} given twice (or clashes with {METADATA_KEY})")
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"tensor {name!r}: unknown safetensors dtype {dtype!r}")
        size = DTYPE_BYTES[dtype] * _numel(shape)
        header[name] = {
            "dtype": dtype,
            "shape": [int(d) for d in shape],
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % ALIGN)
    return len(text).to_bytes(8, "little") + text


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Tensors and metadata of the safetensors file at `path`, validated against the file's size."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            prefix = fh.read(8)
            length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
            if not 2 <= length <= MAX_HEADER_BYTES:
                raise LoadError(f"{path}: not a safetensors file (header length {length}, file size {size})")
            if 8 + length > size:
                raise LoadError(f"{path}: truncated: header of {length} bytes, file of {size} bytes")
            raw = fh.read(length)
    except OSError as exc:
        raise LoadError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise LoadError(f"{path}: unreadable safetensors header: {exc}") from exc
    if not isinstance(header, dict):
        raise LoadError(f"{path}: safetensors header is not a JSON object")
    metadata = header.pop(METADATA_KEY, None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise LoadError(f"{path}: safetensors metadata must map names to strings")
    tensors, spans = {}, []
    for name, entry in header.items():
        info, span = _tensor(path, name, entry)
        tensors[name] = info
        spans.append((span, name))
    _check_spans(path, spans, size - 8 - length)
    return tensors, metadata


def _tensor(path: Path, name: str, entry: Any) -> tuple[TensorInfo, tuple[int, int]]:
    """One header entry, checked: known dtype, non-negative shape, a span as long as shape x dtype."""
    try:
        dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
    except (KeyError, TypeError, ValueError) as exc:
        raise LoadError(f"{path}: malformed safetensors header entry for {name!r}: {entry!r}") from exc
    if dtype not in DTYPE_BYTES:
        raise LoadError(f"{path}: tensor {name!r}: unsupported dtype {dtype!r}")
    numbers = (*shape, begin, end)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
        raise LoadError(f"{path}: tensor {name!r}: shape {list(shape)} and offsets must be non-negative ints")
    info = TensorInfo(path, dtype, shape)
    if end - begin != info.nbytes:
        raise LoadError(
            f"{path}: tensor {name!r}: offsets [{begin}, {end}] hold {end - begin} bytes, "
            f"but {dtype} {list(shape)} needs {info.nbytes}"
        )
    return info, (begin, end)


def _check_spans(path: Path, spans: list[tuple[tuple[int, int], str]], data_bytes: int) -> None:
    """The tensors' spans must tile the data section exactly: no gap, no overlap, nothing past the end."""
    position = 0
    for (begin, end), name in sorted(spans):
        if begin != position:
            raise LoadError(
                f"{path}: tensor {name!r}: offsets [{begin}, {end}] leave a gap or overlap at {position}"
            )
        position = end
    if position > data_bytes:
        raise LoadError(
            f"{path}: truncated: the header needs {position} bytes of data, the file has {data_bytes}"
        )
    if position < data_bytes:
        raise LoadError(f"{path}: {data_bytes - position} bytes after the last tensor (corrupt offsets?)")
