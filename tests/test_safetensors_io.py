"""The one safetensors header codec: what it writes safetensors reads, and a truncated or offset-corrupted
export, clip or checkpoint is a one-line LoadError naming the file, never a traceback from safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from fvc.clips.dataset import ClipDataset, load_clip_tensor
from fvc.clips.store import read_clip, write_clip
from fvc.core.errors import FvcError
from fvc.train import checkpoint
from fvc.weights.export import export_fp16
from fvc.weights.lean_load import lean_load, weight_files
from fvc.weights.safetensors_io import LoadError, encode_header, read_header


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))


def write_raw(path: Path, header: dict, data: bytes) -> Path:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)
    return path


def corrupt_offsets(path: Path, shift: int) -> None:
    """Move the first tensor's end offset by `shift` bytes, keeping the header's length."""
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + length])
    name = next(n for n in header if n != "__metadata__")
    header[name]["data_offsets"][1] += shift
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= length
    path.write_bytes(raw[:8] + text.ljust(length) + raw[8 + length :])


def truncate(path: Path, drop: int) -> None:
    path.write_bytes(path.read_bytes()[:-drop])


def test_encoded_header_is_read_by_safetensors_and_by_the_codec(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([1, 2, 3], dtype=np.int64)
    data = (
        encode_header([("a", "F32", a.shape), ("b", "I64", b.shape)], {"k": "v"}) + a.tobytes() + b.tobytes()
    )
    assert int.from_bytes(data[:8], "little") % 8 == 0
    path = tmp_path / "t.safetensors"
    path.write_bytes(data)
    with safe_open(str(path), framework="np") as fh:
        assert fh.metadata() == {"k": "v"}
        np.testing.assert_array_equal(fh.get_tensor("a"), a)
        np.testing.assert_array_equal(fh.get_tensor("b"), b)
    tensors, metadata = read_header(path)
    assert metadata == {"k": "v"}
    assert {n: (t.dtype, t.shape, t.nbytes) for n, t in tensors.items()} == {
        "a": ("F32", (2, 3), 24),
        "b": ("I64", (3,), 24),
    }


def test_files_written_by_safetensors_pass(tmp_path):
    path = tmp_path / "ref.safetensors"
    save_file(
        {"x": torch.zeros(3, 5, dtype=torch.bfloat16), "y": torch.ones(0), "z": torch.ones(2)}, str(path)
    )
    tensors, _ = read_header(path)
    assert {n: t.shape for n, t in tensors.items()} == {"x": (3, 5), "y": (0,), "z": (2,)}


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "truncated"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12, "4 bytes after the last"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 12]}}, b"\0" * 12, "needs 8"),
        ({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 2]}}, b"\0" * 2, "unsupported dtype 'Q4'"),
        ({"a": {"dtype": "U8", "shape": [-2], "data_offsets": [0, 2]}}, b"\0" * 2, "non-negative"),
        ({"a": {"dtype": "U8", "shape": [2]}}, b"\0" * 2, "malformed"),
        (
            {
                "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                "b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]},
            },
            b"\0" * 3,
            "gap or overlap",
        ),
        ({"__metadata__": {"n": 1}}, b"", "metadata must map names to strings"),
        ([1, 2], b"", "not a JSON object"),
    ],
)
def test_bad_headers_name_the_file(tmp_path, header, data, message):
    path = write_raw(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(LoadError, match=message) as err:
        read_header(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    assert isinstance(err.value, FvcError)


def test_bad_length_prefix_and_short_files(tmp_path):
    path = tmp_path / "x.safetensors"
    for raw, message in [
        (b"", "header length -1"),
        (b"\xff" * 8, "not a safetensors"),
        (b"\x10" + 7 * b"\0", "truncated"),
    ]:
        path.write_bytes(raw)
        with pytest.raises(LoadError, match=message):
            read_header(path)
    with pytest.raises(LoadError, match=f"{tmp_path / 'missing'}: cannot read"):
        read_header(tmp_path / "missing")


@pytest.mark.parametrize("damage", ["truncated", "offsets"])
def test_damaged_export_names_the_file(tmp_path, damage):
    weights = tmp_path / "fold0.safetensors"
    export_fp16(model(), {"model": "m"}, weights)
    truncate(weights, 10) if damage == "truncated" else corrupt_offsets(weights, -2)
    with pytest.raises(LoadError, match=rf"^{weights}: ") as err:
        lean_load(model, weights)
    assert "\n" not in str(err.value)


def test_damaged_shard_names_the_shard(tmp_path):
    weights = tmp_path / "fold0.safetensors"
    export_fp16(model(), {"model": "m"}, weights, max_shard_bytes=64)
    shard = weight_files(weights)[1]
    truncate(shard, 4)
    with pytest.raises(LoadError, match=rf"^{shard}: truncated"):
        lean_load(model, weights)


@pytest.mark.parametrize("damage", ["truncated", "offsets"])
def test_damaged_clip_names_the_file(tmp_path, damage):
    clip = tmp_path / "clips" / "v0.aug0.safetensors"
    write_clip(clip, np.zeros((4, 8, 8, 3), dtype=np.uint8), {"video_id": "v0"})
    truncate(clip, 100) if damage == "truncated" else corrupt_offsets(clip, 3)
    rows = pl.DataFrame({"clip_path": [str(clip)], "label": [1]})
    for read in (
        lambda: load_clip_tensor(clip, 2, 8),
        lambda: read_clip(clip),
        lambda: ClipDataset(rows, 2, 8)[0],
    ):
        with pytest.raises(LoadError, match=rf"{clip}: "):
            read()


def test_damaged_checkpoint_names_the_file(tmp_path):
    state = checkpoint.save_checkpoint(tmp_path, 0, {"model": {"w": torch.ones(64)}}, {})
    path = tmp_path / state["files"]["model"]
    truncate(path, 16)
    with pytest.raises(LoadError, match=rf"^{path}: truncated") as err:
        checkpoint.load_tensors(tmp_path, state, "model")
    assert "\n" not in str(err.value)
