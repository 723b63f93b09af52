"""Pre-flight memory check: from the safetensors headers alone, will inference fit in what the job may use?

Estimate (bytes) of one inference job that loads its folds one at a time:

    current RSS (interpreter, torch and the libraries already imported)
  + fp16 weights of the largest fold
  + its largest tensor (one cast or device copy in flight while loading)
  + the compute copy: the weights in fp32 while it runs (fp32 or bf16 compute from fp16 storage: the whole
    model's copy when at most 8 MB, else the largest unit's; fvc.infer.precision), given by the caller
  + activations: batch x frames x 3 x size^2 x 4 bytes (fp32 input) x ACTIVATION_FACTOR

It is compared with the job's allowance: the SLURM allocation (`SLURM_MEM_PER_NODE` MB, or
`SLURM_MEM_PER_CPU` x `SLURM_CPUS_ON_NODE`), the cgroup's `memory.max`, the smallest of those that are set,
else the available RAM plus what this process already holds; minus `reserved_bytes` (other processes of the
same job, e.g. Snakemake's own). On CUDA the weights and activations are compared with the free GPU memory
(`torch.cuda.mem_get_info`), and the host keeps the baseline and two of the largest tensor.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import psutil
import torch

from fvc.core.errors import FvcError
from fvc.core.memory import cgroup_bytes
from fvc.weights.lean_load import tensor_infos

log = logging.getLogger(__name__)
MB = 1024 * 1024
ACTIVATION_FACTOR = 32


class PreflightError(FvcError, MemoryError):
    """The job cannot fit; the message gives both numbers and the config line to change."""


@dataclass(frozen=True)
class Estimate:
    """Memory need of one inference job, in bytes."""

    baseline: int
    weights: int
    largest_tensor: int
    activations: int
    compute_copy: int = 0

    @property
    def host_total(self) -> int:
        """Need in host RAM when everything runs on the CPU."""
        return self.baseline + self.device_total

    @property
    def device_total(self) -> int:
        """Need in GPU memory when the model runs on CUDA."""
        return self.weights + self.largest_tensor + self.compute_copy + self.activations

    def describe(self) -> str:
        """The terms of the estimate, in MB."""
        return (
            f"weights {self.weights / MB:.0f} MB fp16 + largest tensor {self.largest_tensor / MB:.0f} MB"
            f" + compute copy {self.compute_copy / MB:.0f} MB + activations {self.activations / MB:.0f} MB"
            f" + baseline {self.baseline / MB:.0f} MB"
        )


Paths = Sequence[str | os.PathLike[str]]


def estimate(weights: Paths, batch_size: int, num_frames: int, size: int, compute_copy: int = 0) -> Estimate:
    """The need of loading the largest of `weights` (folds load one at a time) and running a batch whose
    compute casts `compute_copy` bytes of weights at a time."""
    fold_bytes, largest = 0, 0
    for path in weights:
        infos = tensor_infos(path).values()
        fold_bytes = max(fold_bytes, sum(info.loaded_nbytes() for info in infos))
        largest = max(largest, max((info.nbytes for info in infos), default=0))
    activations = batch_size * num_frames * 3 * size * size * 4 * ACTIVATION_FACTOR
    return Estimate(psutil.Process().memory_info().rss, fold_bytes, largest, activations, compute_copy)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else None


def host_allowance() -> tuple[int, str]:
    """Bytes this job may use in host RAM, and where the number comes from."""
    limits: list[tuple[int, str]] = []
    per_node = _env_int("SLURM_MEM_PER_NODE")
    per_cpu, cpus = _env_int("SLURM_MEM_PER_CPU"), _env_int("SLURM_CPUS_ON_NODE")
    if per_node:
        limits.append((per_node * MB, f"SLURM_MEM_PER_NODE={per_node}"))
    elif per_cpu and cpus:
        limits.append((per_cpu * cpus * MB, f"SLURM_MEM_PER_CPU={per_cpu} x SLURM_CPUS_ON_NODE={cpus}"))
    cgroup = cgroup_bytes("memory.max")
    if cgroup is not None:
        limits.append((cgroup, "cgroup memory.max"))
    if limits:
        return min(limits)
    available = psutil.virtual_memory().available + psutil.Process().memory_info().rss
    return available, "available RAM"


def preflight(
    weights: Paths,
    model_name: str,
    batch_size: int,
    num_frames: int,
    size: int,
    device: str | torch.device = "cpu",
    reserved_bytes: int = 0,
    compute_copy: int = 0,
) -> Estimate:
    """Raise PreflightError before anything is loaded if inference of `model_name` cannot fit
    (`compute_copy`: see `estimate`)."""
    need = estimate(weights, batch_size, num_frames, size, compute_copy)
    device = torch.device(device)
    fix = (
        f"raise models.{model_name}.infer_mem_mb in config.yaml (or lower infer.batch_size, now {batch_size})"
    )
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        if need.device_total > free:
            raise PreflightError(
                f"infer {model_name}: needs ~{need.device_total / MB:.0f} MB of GPU memory "
                f"({need.describe()}) but {device} has {free / MB:.0f} MB free of {total / MB:.0f} MB; "
                f"set models.{model_name}.vram_mb to {need.device_total / MB:.0f} and a models.{model_name}"
                f".gpu_model with that much memory, or lower infer.batch_size (now {batch_size})"
            )
        log.info(
            "pre-flight %s: needs ~%.0f MB of GPU memory, %s has %.0f MB free of %.0f MB",
            model_name,
            need.device_total / MB,
            device,
            free / MB,
            total / MB,
        )
        host_need = need.baseline + 2 * need.largest_tensor
    else:
        host_need = need.host_total
    allowance, source = host_allowance()
    allowance -= reserved_bytes
    if host_need > allowance:
        raise PreflightError(
            f"infer {model_name}: needs ~{host_need / MB:.0f} MB ({need.describe()}) but the job may use "
            f"{allowance / MB:.0f} MB ({source}, minus {reserved_bytes / MB:.0f} MB reserved); {fix}"
        )
    log.info(
        "pre-flight %s: needs ~%.0f MB (%s), may use %.0f MB (%s, minus %.0f MB reserved)",
        model_name,
        host_need / MB,
        need.describe(),
        allowance / MB,
        source,
        reserved_bytes / MB,
    )
    return need
