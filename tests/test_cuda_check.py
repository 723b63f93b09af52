"""benchmarks/cuda_check.py: says plainly when there is no CUDA device, and runs its steps on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "cuda_check.py"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT
    )


def test_without_a_gpu_it_says_so_and_checks_nothing():
    result = run()
    assert result.returncode == 0, result.stderr
    build = f"torch {torch.__version__}, CUDA build {torch.version.cuda}"
    assert result.stdout == f"no CUDA device: {build} sees no GPU; nothing checked\n"


def test_cpu_smoke_run_trains_exports_loads_and_infers():
    result = run("--device", "cpu", "--models", "logistic_regression", "--steps", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    header, row = result.stdout.splitlines()
    assert header.split()[:2] == ["model", "precision"]
    name, precision, loss, train_peak, infer_peak, preflight_mb = row.split()
    assert (name, precision, train_peak, infer_peak) == ("logistic_regression", "bf16", "-", "-")
    assert float(loss) > 0 and float(preflight_mb) > 0
