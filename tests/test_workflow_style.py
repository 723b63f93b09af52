"""The workflow stays clean: snakemake --lint, snakefmt, ruff, mypy, and a dry run of the default profile."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*cmd: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True, env=env)


def test_snakemake_lint_is_clean() -> None:
    result = run(BIN / "snakemake", "--lint", "--cores", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def test_snakefmt_check_is_clean() -> None:
    result = run(BIN / "snakefmt", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_is_clean() -> None:
    folders = ("src", "tests", "benchmarks", "workflow_scripts")
    for command in (("check",), ("format", "--check")):
        result = run(BIN / "ruff", *command, *folders)
        assert result.returncode == 0, result.stdout + result.stderr


def test_dry_run_of_default_profile_plans_every_stage() -> None:
    result = run(BIN / "snakemake", "--profile", "profiles/local", "-n")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    for rule in ("demo_data", "download", "index", "augment", "folds", "train", "infer"):
        assert f"{rule}" in out, rule


@pytest.mark.slow  # ~45 s of CPU on a cold cache (.mypy_cache), ~2 s after; started at collection (conftest)
def test_mypy_is_clean(mypy_run: subprocess.Popen) -> None:
    output, _ = mypy_run.communicate(timeout=900)
    assert mypy_run.returncode == 0, output
    assert "Success: no issues found" in output


def test_adapters_pass_keyword_arguments_only() -> None:
    """Each adapter in workflow_scripts hands its library call keywords only (no positional order)."""
    for script in sorted((ROOT / "workflow_scripts").glob("*.py")):
        tree = ast.parse(script.read_text())
        calls = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id.endswith(
                (
                    "_all",
                    "_fold",
                    "_model",
                    "_index",
                    "_folds",
                    "_workflow",
                    "_dataset",
                    "_shard",
                    "_shards",
                    "_clips",
                )
            )
        ]
        assert calls, f"{script.name}: no library call found"
        for call in calls:
            assert not call.args, (
                f"{script.name}: {call.func.id}() gets {len(call.args)} positional arguments"
            )
