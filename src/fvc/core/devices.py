"""The one device resolver for training and inference, and what the job was given (GPUs, CPUs).

Inside a SLURM job (`SLURM_JOB_ID` set) the device follows the allocation: `auto` is the GPU SLURM gave
(it sets `SLURM_GPUS_ON_NODE` / `SLURM_JOB_GPUS` and `CUDA_VISIBLE_DEVICES`), else the CPU, even when torch
could see a GPU the job did not ask for; `cuda` without an allocated GPU is an error naming the model row's
`gpus`. A GPU that SLURM gave but torch cannot use (a CPU-only torch build, a driver mismatch, the test
cluster's fake GPUs) makes `auto` warn and use the CPU, and `cuda` fail. Outside SLURM: `auto` is the first
GPU torch sees, else the CPU."""

from __future__ import annotations

import logging
import os
import re

import torch

from fvc.core.errors import FvcError

log = logging.getLogger(__name__)
DEVICE_NAMES = "auto, cpu, cuda or cuda:N"


def slurm_gpus() -> int | None:
    """GPUs SLURM allocated to this job; None outside a SLURM job."""
    if not os.environ.get("SLURM_JOB_ID"):
        return None
    on_node = os.environ.get("SLURM_GPUS_ON_NODE", "").strip()
    if on_node.isdigit():
        return int(on_node)
    ids = os.environ.get("SLURM_STEP_GPUS") or os.environ.get("SLURM_JOB_GPUS") or ""
    return len([part for part in ids.split(",") if part.strip()])


def job_cpus() -> int:
    """CPUs this job may use: SLURM's `SLURM_CPUS_PER_TASK` when set (the affinity mask is the whole node
    where SLURM does not pin tasks), never more than the CPUs this process may run on."""
    affinity = len(os.sched_getaffinity(0))
    given = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    return min(int(given), affinity) if given.isdigit() and int(given) > 0 else affinity


def _unusable_gpu(allocated: int) -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return (
        f"SLURM allocated {allocated} GPU(s) (CUDA_VISIBLE_DEVICES={visible!r}) but torch sees none "
        f"(torch {torch.__version__}, CUDA build {torch.version.cuda})"
    )


def resolve_device(
    name: str | torch.device, key: str = "device", gpus_key: str = "the model row's gpus"
) -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N` as a torch device, following a SLURM job's allocation (module
    docstring). Errors raise FvcError naming the config key `key` (e.g. `train.device`) and, for a SLURM job
    without a GPU, `gpus_key` (e.g. `models.x3d.gpus`)."""
    text = str(name)
    allocated = slurm_gpus()
    if text == "auto":
        if allocated == 0:
            return torch.device("cpu")
        if torch.cuda.is_available():
            return torch.device("cuda")
        if allocated:
            log.warning("%s is 'auto': %s; running on the CPU", key, _unusable_gpu(allocated))
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise FvcError(f"{key}: unknown device {text!r}; use {DEVICE_NAMES}")
    if allocated == 0:
        raise FvcError(
            f"{key} is {text!r} but this SLURM job has no GPU: set {gpus_key} to 1 or more, or {key} to auto"
        )
    if not torch.cuda.is_available():
        reason = _unusable_gpu(allocated) if allocated else "torch sees no GPU"
        raise FvcError(f"{key} is {text!r} but {reason}; use auto or cpu")
    index = int(match[1] or 0)
    if index >= torch.cuda.device_count():
        raise FvcError(f"{key} is {text!r} but torch sees {torch.cuda.device_count()} GPU(s)")
    return torch.device(text)
