"""Partitions by kind of work and the GPU / CPU resources the rules hand to the SLURM plugin (a dry run of
the workflow on the SLURM profile: no cluster needed)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from slurm_support import BIN, ROOT
from workflow_runner import copy_workflow

from fvc.slurm.partitions import partition


def test_partition_precedence():
    config = {"slurm": {"cpu_partition": "cpu_cfg", "gpu_partition": None}}
    env = {"FVC_SLURM_PARTITION": "one", "SLURM_PARTITION": "site"}
    assert partition(config, "cpu", env) == "cpu_cfg"
    assert partition(config, "gpu", env) == "one"  # unset: the profile's one partition
    assert partition(config, "cpu", {**env, "FVC_SLURM_CPU_PARTITION": "cpu_env"}) == "cpu_env"
    assert partition({}, "gpu", {"SLURM_PARTITION": "site"}) == "site"
    assert partition({}, "gpu", {}) == "debug"


def test_rules_ask_gpus_and_cpus_for_gpu_models_only(tmp_path: Path):
    workdir = copy_workflow(tmp_path / "wf", ROOT / "tests" / "slurm" / "gpu_config.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FVC_SLURM", "SLURM_"))}
    env |= {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "FVC_SLURM_CPU_PARTITION": "cpuq"}
    cmd = [str(BIN / "snakemake"), "-n", "--profile", str(ROOT / "profiles" / "slurm"), "--configfile",
           "test_config.yaml"]  # fmt: skip
    out = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    resources = {}
    for rule, line in re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)", out.stdout, re.M):
        resources.setdefault(rule, dict(kv.split("=", 1) for kv in line.split(", ")))
    assert (resources["train"]["gpu"], resources["train"]["slurm_partition"]) == ("1", "gpu")
    assert (resources["infer"]["gpu"], resources["infer"]["slurm_partition"]) == ("1", "gpu")
    for rule in ("index", "augment", "folds"):
        assert "gpu" not in resources[rule] and resources[rule]["slurm_partition"] == "cpuq", resources[rule]
