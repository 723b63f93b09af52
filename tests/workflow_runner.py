"""Run the real workflow in a scratch copy of the repository's workflow files (no mocks)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOW_FILES = (
    "Snakefile",
    "config.yaml",
    "rules",
    "workflow_scripts",
    "envs",
    "profiles",
    "report",
)


def copy_workflow(dest: Path, configfile: Path = ROOT / "tests" / "configs" / "tiny.yaml") -> Path:
    """Copy the workflow into `dest` with `configfile` as tests/config.yaml beside it; returns `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(
                src, dest / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(src, dest / name)
    shutil.copy2(configfile, dest / "test_config.yaml")
    return dest


def snakemake(workdir: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the venv's snakemake in `workdir` with the test config merged in; output captured as text."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    cmd = [str(BIN / "snakemake"), "--configfile", "test_config.yaml", *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env, timeout=timeout)
