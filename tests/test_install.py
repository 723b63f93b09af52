"""A normal (non-editable) install works outside the source tree: the wheel carries the config schema, and
`fvc --help` and a config load run from the installed copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fvc.core.config import load_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(project_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built offline from a copy of the sources (the build leaves no files behind)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(
        project_root / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(project_root / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp, source],
        check=True,
        timeout=120,
    )
    (built,) = tmp.glob("fvc-*.whl")
    return built


def test_wheel_ships_the_config_schema(wheel: Path) -> None:
    assert "fvc/core/config.schema.yaml" in zipfile.ZipFile(wheel).namelist()


def test_installed_package_runs_outside_the_source_tree(wheel: Path, project_root: Path, tmp_path: Path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", site, wheel],
        check=True,
        timeout=120,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # the installed copy, ahead of the editable install
    load = (
        "import sys, fvc; from fvc.core.config import load_config; "
        "print(fvc.__file__); print(load_config(sys.argv[1])['train']['effective_batch'])"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", load, project_root / "config.yaml"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr
    module_file, effective_batch = loaded.stdout.split()
    assert Path(module_file).is_relative_to(site)
    assert int(effective_batch) == load_config(project_root / "config.yaml")["train"]["effective_batch"]

    helped = subprocess.run(
        [site / "bin" / "fvc", "--help"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120
    )
    assert helped.returncode == 0, helped.stderr
    assert "usage: fvc" in helped.stdout
