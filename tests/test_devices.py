"""The one device resolver: auto, cpu, cuda[:N]; a GPU that is not there and unknown names are FvcErrors
naming the config key. Inside a SLURM job the device follows the allocation (SLURM's variables as the test
cluster sets them; torch.cuda faked where a GPU must seem usable, since this machine has none)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fvc.core.devices import job_cpus, resolve_device, slurm_gpus
from fvc.core.errors import FvcError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def outside_slurm(monkeypatch):
    """Each test starts outside any SLURM job, whatever runs the tests."""
    for name in list(os.environ):
        if name.startswith("SLURM_"):
            monkeypatch.delenv(name)


def in_slurm_job(monkeypatch, gpus: int, cpus: int | None = None) -> None:
    """The variables SLURM sets in a job of the test cluster (`sbatch --gpus=N --cpus-per-task=C`)."""
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    if gpus:
        monkeypatch.setenv("SLURM_GPUS_ON_NODE", str(gpus))
        monkeypatch.setenv("SLURM_JOB_GPUS", ",".join(map(str, range(gpus))))
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(gpus))))
    if cpus is not None:
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", str(cpus))


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
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env |= {"CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT / "src")}
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


def test_slurm_job_without_a_gpu_runs_auto_on_the_cpu_and_refuses_cuda(monkeypatch):
    in_slurm_job(monkeypatch, gpus=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU the job did not ask for
    assert slurm_gpus() == 0
    assert resolve_device("auto", "train.device") == torch.device("cpu")
    with pytest.raises(FvcError) as info:
        resolve_device("cuda", "train.device", "models.x3d.gpus")
    assert str(info.value) == (
        "train.device is 'cuda' but this SLURM job has no GPU: set models.x3d.gpus to 1 or more, "
        "or train.device to auto"
    )


def test_slurm_job_with_a_gpu_runs_auto_on_it(monkeypatch):
    in_slurm_job(monkeypatch, gpus=1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert slurm_gpus() == 1
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda:0")


def test_an_allocated_gpu_torch_cannot_use_warns_on_auto_and_fails_cuda(monkeypatch, caplog):
    in_slurm_job(monkeypatch, gpus=2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, "fvc.core.devices"):
        assert resolve_device("auto", "train.device") == torch.device("cpu")
    expected = (
        "train.device is 'auto': SLURM allocated 2 GPU(s) (CUDA_VISIBLE_DEVICES='0,1') but torch sees none"
    )
    assert expected in caplog.text
    with pytest.raises(FvcError, match=r"^train\.device is 'cuda' but SLURM allocated 2 GPU\(s\)"):
        resolve_device("cuda", "train.device")


def test_gpu_ids_count_when_slurm_gives_no_count(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_JOB_GPUS", "2,5")
    assert slurm_gpus() == 2


def test_job_cpus_follow_slurm_within_the_affinity(monkeypatch):
    affinity = len(os.sched_getaffinity(0))
    assert job_cpus() == affinity
    in_slurm_job(monkeypatch, gpus=0, cpus=1)
    assert job_cpus() == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", str(affinity + 8))
    assert job_cpus() == affinity


def test_loader_workers_follow_the_job_cpus_unless_the_row_sets_them(monkeypatch):
    from fvc.core.config import ModelSpec
    from fvc.train.loader import workers

    row = dict(
        name="naive_cnn", batch_size=2, grad_accum_steps=1, num_frames=4, size=32, epochs=1, lr=0.1,
        mem_mb=1000, runtime=10, infer_mem_mb=1000,
    )  # fmt: skip
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    in_slurm_job(monkeypatch, gpus=0, cpus=4)
    assert workers(ModelSpec(**row)) == 3
    assert workers(ModelSpec(**row, num_workers=1)) == 1
    assert workers(ModelSpec(**row, num_workers=8)) == 3
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert workers(ModelSpec(**row)) == 0
