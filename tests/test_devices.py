"""The one device resolver: auto, cpu, cuda[:N]; a GPU that is not there and unknown names are FvcErrors
naming the config key."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fvc.core.devices import resolve_device
from fvc.core.errors import FvcError

ROOT = Path(__file__).resolve().parents[1]


def test_auto_and_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "mps0", "", "CPU"])
def test_unknown_names_name_the_key(name):
    with pytest.raises(FvcError, match=rf"^infer\.device: unknown device {re.escape(repr(name))}; use auto"):
        resolve_device(name, "infer.device")


def test_cuda_without_a_visible_gpu_is_refused():
    """Run with no GPU visible (also on a machine that has one)."""
    code = (
        "from fvc.core.devices import resolve_device\n"
        "assert resolve_device('auto').type == 'cpu'\n"
        "for name in ('cuda', 'cuda:1'):\n"
        "    try:\n"
        "        resolve_device(name, 'train.device')\n"
        "    except Exception as exc:\n"
        "        print(type(exc).__name__, exc)\n"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "FvcError train.device is 'cuda' but torch sees no GPU; use auto or cpu",
        "FvcError train.device is 'cuda:1' but torch sees no GPU; use auto or cpu",
    ]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_when_a_gpu_is_visible():
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    count = torch.cuda.device_count()
    with pytest.raises(FvcError, match=f"sees {count} GPU"):
        resolve_device(f"cuda:{count}", "train.device")


def test_one_resolver_in_the_package():
    defs = [p for p in (ROOT / "src" / "fvc").rglob("*.py") if "def resolve_device(" in p.read_text()]
    assert [p.relative_to(ROOT).as_posix() for p in defs] == ["src/fvc/core/devices.py"]
