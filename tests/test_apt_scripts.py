"""scripts/apt_install.sh and scripts/install_chromium.sh: what a machine without Chromium runs (decided from
PATH, shown by --check), and the apt install that waits for dpkg's lock instead of failing on it."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASH = shutil.which("bash") or "/bin/bash"
DPKG_LOCK = Path("/var/lib/dpkg/lock-frontend")


def run_script(name: str, *args: str, path: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {"PATH": path, "LANG": "C"}
    return subprocess.run(
        [BASH, str(ROOT / "scripts" / name), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_install_chromium_leaves_a_chromium_on_path_alone(tmp_path: Path):
    browser = tmp_path / "chromium"
    browser.write_text("#!/bin/sh\nexit 0\n")
    browser.chmod(0o755)
    for args in ((), ("--check",)):
        result = run_script("install_chromium.sh", *args, path=str(tmp_path))
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"chromium: {browser}\n"


def test_install_chromium_without_one_on_path_installs_it_through_the_lock_waiting_apt(tmp_path: Path):
    result = run_script("install_chromium.sh", "--check", path=str(tmp_path))  # a PATH with no chromium
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "chromium: not on PATH; would run:"
    assert lines[1].startswith("apt-get -o DPkg::Lock::Timeout=")
    assert lines[1].endswith(" install -y -qq --no-install-recommends --no-upgrade chromium")
    assert "update -qq" in lines[2]


def installed(package: str) -> bool:
    query = ["dpkg-query", "-W", "-f=${Status}", package]
    return subprocess.run(query, capture_output=True, text=True).stdout == "install ok installed"


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("apt-get") is None or not installed("bash"),
    reason="needs root on a Debian machine",
)
def test_apt_install_waits_for_a_held_dpkg_lock_and_changes_nothing_installed():
    fd = os.open(DPKG_LOCK, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.lockf(
            fd, fcntl.LOCK_EX
        )  # the lock apt-get and dpkg take (fcntl), as a running install holds it
        install = subprocess.Popen(
            [BASH, str(ROOT / "scripts" / "apt_install.sh"), "bash"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(3)
        assert install.poll() is None, "apt_install.sh gave up on the held lock: " + install.stdout.read()
    finally:
        os.close(fd)
    out, _ = install.communicate(timeout=300)
    assert install.returncode == 0, out
    assert out == "apt_install.sh: installing bash\n", "an installed package needed no list update"
    assert installed("bash")
