"""The `fvc` command lists its stages and every stage module answers --help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fvc.cli import COMMANDS


def run_fvc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fvc.cli", *args], capture_output=True, text=True)


def test_usage_lists_every_command() -> None:
    result = run_fvc("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout


def test_unknown_command_is_refused() -> None:
    result = run_fvc("trian")
    assert result.returncode == 2 and "unknown command 'trian'" in result.stderr


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_has_help(command: str) -> None:
    result = run_fvc(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()
