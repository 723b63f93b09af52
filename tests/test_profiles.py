"""The SLURM profile installs where Snakemake finds it by name, and the workflow profile applies under it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_runner import ROOT, copy_workflow

from fvc.slurm.profile import PROFILE_DIR, ProfileExistsError, install_profile, user_profiles_dir

BIN = Path(sys.executable).parent
# The settings Snakemake's own argument parser reads from the profiles, as JSON (run in the workflow copy).
PARSED_SETTINGS = """
import json, sys
from snakemake.cli import parse_args
_, args = parse_args(sys.argv[1:])
print(json.dumps({key: getattr(args, key) for key in (
    "executor", "retries", "rerun_incomplete", "keep_going", "latency_wait", "default_resources", "cores")},
    default=str))
"""


def env_with_config_home(config_home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "XDG_CONFIG_HOME": str(config_home),
        "FVC_SLURM_ACCOUNT": "acct_from_env",
        "FVC_SLURM_PARTITION": "part_from_env",
    }


def test_repository_profile_is_the_packaged_one() -> None:
    assert (ROOT / "profiles" / "slurm").resolve() == PROFILE_DIR.resolve()
    assert (PROFILE_DIR / "profile.yaml").is_file()


def test_install_copies_the_profile_and_is_idempotent(tmp_path: Path) -> None:
    dest = install_profile(tmp_path)
    assert dest == tmp_path / "slurm"
    assert (dest / "profile.yaml").read_bytes() == (PROFILE_DIR / "profile.yaml").read_bytes()
    assert install_profile(tmp_path) == dest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slurm"], "no staging folder left behind"


def test_fvc_profile_install_refuses_a_different_profile_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "profile.yaml").write_text("executor: local\n")
    cmd = [str(BIN / "fvc"), "profile", "install", "--dest", str(tmp_path)]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"fvc profile: {tmp_path / 'slurm'} already holds a different Snakemake profile; "
        "move it aside or install with --force"
    ]
    assert subprocess.run([*cmd, "--force"], capture_output=True, timeout=60).returncode == 0
    assert (tmp_path / "slurm" / "profile.yaml").read_bytes() == (PROFILE_DIR / "profile.yaml").read_bytes()


def test_install_refuses_a_different_profile_unless_forced(tmp_path: Path) -> None:
    theirs = tmp_path / "slurm"
    theirs.mkdir()
    (theirs / "config.yaml").write_text("executor: slurm\njobs: 500\n")
    with pytest.raises(ProfileExistsError, match=str(theirs)):
        install_profile(tmp_path)
    assert (theirs / "config.yaml").read_text().endswith("jobs: 500\n"), "left untouched"
    install_profile(tmp_path, force=True)
    assert sorted(p.name for p in theirs.iterdir()) == ["profile.yaml"]


def test_default_destination_is_snakemakes_user_profiles_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert user_profiles_dir() == tmp_path / "snakemake"
    assert install_profile() == tmp_path / "snakemake" / "slurm"


@pytest.fixture(scope="module")
def workflow_with_installed_profile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A workflow copy, and an environment whose XDG_CONFIG_HOME holds the SLURM profile, installed by the
    documented one-time step `fvc profile install`."""
    env = env_with_config_home(tmp_path_factory.mktemp("xdg"))
    installed = subprocess.run(
        [str(BIN / "fvc"), "profile", "install"], env=env, capture_output=True, text=True, timeout=60
    )
    assert installed.returncode == 0, installed.stderr
    assert (Path(env["XDG_CONFIG_HOME"]) / "snakemake" / "slurm" / "profile.yaml").is_file()
    return copy_workflow(tmp_path_factory.mktemp("workflow")), env


def test_dry_run_through_the_named_profile_asks_slurm_for_each_jobs_memory(
    workflow_with_installed_profile: tuple[Path, dict[str, str]],
) -> None:
    workdir, env = workflow_with_installed_profile
    cmd = [str(BIN / "snakemake"), "--profile", "slurm", "--configfile", "test_config.yaml", "-n"]
    result = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "Using profiles slurm and workflow specific profile profiles/default" in out
    resources = [line for line in out.splitlines() if line.strip().startswith("resources:")]
    assert resources
    for line in resources:
        assert "slurm_account=acct_from_env" in line and "slurm_partition=part_from_env" in line, line
    assert any("mem_mb=1100" in line for line in resources), "naive_cnn's training mem_mb from the table"


def test_workflow_profile_settings_apply_with_the_slurm_profile(
    workflow_with_installed_profile: tuple[Path, dict[str, str]],
) -> None:
    workdir, env = workflow_with_installed_profile
    cmd = [str(BIN / "python"), "-c", PARSED_SETTINGS, "--profile", "slurm", "-n"]
    result = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    settings = json.loads(result.stdout.splitlines()[-1])
    assert settings["executor"] == "slurm"
    assert settings["retries"] == 2 and settings["rerun_incomplete"] and settings["keep_going"]
    assert settings["latency_wait"] == 30
    # The SLURM profile's default-resources pass through (the workflow profile sets none).
    assert "slurm_account" in settings["default_resources"]
    assert "slurm_partition" in settings["default_resources"]


def test_workflow_profile_settings_apply_with_the_local_profile() -> None:
    cmd = [str(BIN / "python"), "-c", PARSED_SETTINGS, "--profile", "profiles/local", "-n"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    settings = json.loads(result.stdout.splitlines()[-1])
    assert settings["retries"] == 2 and settings["rerun_incomplete"] and settings["cores"] == 2
