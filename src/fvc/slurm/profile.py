"""The SLURM profile, installed where Snakemake finds profiles by name (`snakemake --profile slurm`)."""

from __future__ import annotations

import filecmp
import os
import shutil
import tempfile
from pathlib import Path

import platformdirs

from fvc.core.atomic import commit_dir
from fvc.core.errors import FvcError

PROFILE_NAME = "slurm"
PROFILE_DIR = Path(__file__).with_name("profile_data")  # package data: ships in the wheel


class ProfileExistsError(FvcError, FileExistsError):
    """Another profile already has the name; the message says how to replace it."""


def user_profiles_dir() -> Path:
    """Where Snakemake looks for a profile by name for this user: $XDG_CONFIG_HOME/snakemake, else
    ~/.config/snakemake (Snakemake's own `platformdirs` look-up)."""
    return Path(platformdirs.user_config_dir("snakemake", "snakemake"))


def _same_profile(folder: Path) -> bool:
    """Whether `folder` holds exactly the files of the packaged profile, with the same content."""
    names = sorted(p.name for p in PROFILE_DIR.iterdir())
    if sorted(p.name for p in folder.iterdir()) != names:
        return False
    return all(filecmp.cmp(PROFILE_DIR / name, folder / name, shallow=False) for name in names)


def install_profile(dest_root: str | os.PathLike[str] | None = None, force: bool = False) -> Path:
    """Copy the SLURM profile to `dest_root`/slurm (default: the user's Snakemake profiles folder) and return
    that folder. An identical profile there is kept; a different one is replaced only with `force`."""
    dest = Path(dest_root if dest_root is not None else user_profiles_dir()) / PROFILE_NAME
    if dest.exists() and not force:
        if dest.is_dir() and _same_profile(dest):
            return dest
        raise ProfileExistsError(
            f"{dest} already holds a different Snakemake profile; move it aside or install with --force"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A unique staging folder: two installs at once never share one; readable like any profile folder.
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    staging.chmod(0o755)
    shutil.copytree(PROFILE_DIR, staging, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    elif dest.exists() or dest.is_symlink():
        dest.unlink()
    commit_dir(staging, dest)
    return dest
