"""Pre-flight memory check: estimate from safetensors headers, SLURM / cgroup allowances, clear refusals."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import fvc.infer.preflight as pf
from fvc.infer.preflight import MB, PreflightError, estimate, host_allowance, preflight
from fvc.weights.export import export_fp16

SLURM_VARS = ("SLURM_MEM_PER_NODE", "SLURM_MEM_PER_CPU", "SLURM_CPUS_ON_NODE")


@pytest.fixture
def weights(tmp_path):
    """Two folds: a 4 MB fp16 export (largest tensor 2 MB), and an 8 MB fp32 file that loads as 4 MB fp16."""
    model = nn.Sequential(nn.Linear(1024, 1024), nn.Linear(1024, 1024, bias=False))
    export_fp16(model, {}, tmp_path / "fold0.safetensors", max_shard_bytes=3 * MB)
    save_file({"w": torch.zeros(2048, 1024)}, tmp_path / "fold1.safetensors")
    return [tmp_path / "fold0.safetensors", tmp_path / "fold1.safetensors"]


@pytest.fixture
def no_slurm(monkeypatch):
    for name in SLURM_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_estimate_reads_headers_and_takes_the_largest_fold(weights):
    need = estimate(weights, batch_size=2, num_frames=4, size=8)
    assert need.weights == 2 * (2 * 1024 * 1024 + 1024)  # fp16 bytes of fold 0 (fold 1: 4 MB exactly)
    assert need.largest_tensor == 8 * MB  # fold 1's fp32 tensor, read before its cast
    assert need.activations == 2 * 4 * 3 * 8 * 8 * 4 * pf.ACTIVATION_FACTOR
    assert need.baseline > 50 * MB  # this interpreter with torch imported
    assert need.host_total == need.baseline + need.weights + need.largest_tensor + need.activations


def test_slurm_allocation_too_small_is_refused(weights, no_slurm):
    no_slurm.setenv("SLURM_MEM_PER_NODE", "64")
    with pytest.raises(PreflightError) as err:
        preflight(weights, "naive_cnn", batch_size=2, num_frames=4, size=8)
    message = str(err.value)
    assert "the job may use 64 MB (SLURM_MEM_PER_NODE=64" in message
    need_mb = int(re.search(r"needs ~(\d+) MB", message).group(1))
    assert abs(need_mb - estimate(weights, 2, 4, 8).host_total / MB) < 20
    assert "weights 4 MB fp16 + largest tensor 8 MB" in message
    assert "raise models.naive_cnn.infer_mem_mb in config.yaml" in message


def test_per_cpu_allocation_and_reserved_memory(weights, no_slurm):
    no_slurm.setenv("SLURM_MEM_PER_CPU", "100000")
    no_slurm.setenv("SLURM_CPUS_ON_NODE", "2")
    assert host_allowance() == (200000 * MB, "SLURM_MEM_PER_CPU=100000 x SLURM_CPUS_ON_NODE=2")
    need = preflight(weights, "x3d", batch_size=2, num_frames=4, size=8)  # fits
    assert need.weights > 0
    with pytest.raises(PreflightError, match="minus 199900 MB reserved"):
        preflight(weights, "x3d", batch_size=2, num_frames=4, size=8, reserved_bytes=199900 * MB)


def test_cgroup_limit_counts_when_lower(weights, no_slurm):
    no_slurm.setenv("SLURM_MEM_PER_NODE", "100000")
    no_slurm.setattr(pf, "cgroup_bytes", lambda name: 32 * MB if name == "memory.max" else None)
    assert host_allowance() == (32 * MB, "cgroup memory.max")
    with pytest.raises(PreflightError, match="cgroup memory.max"):
        preflight(weights, "svm", batch_size=1, num_frames=1, size=8)


def test_without_limits_uses_available_ram(weights, no_slurm):
    no_slurm.setattr(pf, "cgroup_bytes", lambda name: None)
    allowance, source = host_allowance()
    assert source == "available RAM" and allowance > 0
    with pytest.raises(PreflightError, match="available RAM"):
        preflight(weights, "svm", batch_size=10**6, num_frames=64, size=256)


def test_compute_copy_of_one_unit_counts_in_the_need(weights, no_slurm):
    need = estimate(weights, batch_size=2, num_frames=4, size=8, compute_copy=3 * MB)
    assert need.host_total == need.baseline + need.weights + need.largest_tensor + 3 * MB + need.activations
    assert "largest tensor 8 MB + compute copy 3 MB" in need.describe()
    no_slurm.setenv("SLURM_MEM_PER_NODE", str(int(estimate(weights, 2, 4, 8).host_total / MB) + 40))
    preflight(weights, "x3d", batch_size=2, num_frames=4, size=8)
    with pytest.raises(PreflightError, match="compute copy 100 MB"):
        preflight(weights, "x3d", batch_size=2, num_frames=4, size=8, compute_copy=100 * MB)


def fake_gpu(monkeypatch, free_mb: int, total_mb: int = 80_000) -> None:
    """torch.cuda.mem_get_info of a GPU with `free_mb` free (this machine has none)."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free_mb * MB, total_mb * MB))


def test_gpu_memory_too_small_is_refused_with_both_numbers_and_the_key(weights, no_slurm):
    need = estimate(weights, batch_size=2, num_frames=4, size=8)
    fake_gpu(no_slurm, free_mb=int(need.device_total / MB) - 2, total_mb=16_000)
    with pytest.raises(PreflightError) as err:
        preflight(weights, "x3d", batch_size=2, num_frames=4, size=8, device="cuda")
    message = str(err.value)
    needed = int(re.search(r"needs ~(\d+) MB of GPU memory", message).group(1))
    assert abs(needed - need.device_total / MB) <= 1
    assert f"cuda has {int(need.device_total / MB) - 2} MB free of 16000 MB" in message
    assert f"set models.x3d.vram_mb to {needed} and a models.x3d.gpu_model" in message
    assert "lower infer.batch_size (now 2)" in message


def test_gpu_with_room_passes(weights, no_slurm, caplog):
    need = estimate(weights, batch_size=2, num_frames=4, size=8)
    fake_gpu(no_slurm, free_mb=int(need.device_total / MB) + 50, total_mb=16_000)
    with caplog.at_level("INFO", "fvc.infer.preflight"):
        preflight(weights, "x3d", batch_size=2, num_frames=4, size=8, device="cuda")
    assert f"cuda has {int(need.device_total / MB) + 50} MB free of 16000 MB" in caplog.text
