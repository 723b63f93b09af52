"""The `fvc` contract: help, version and exit codes; fast, light parsing; one line per user error; the
workflow's layout as every command's default paths."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml
from infer_data import write_index
from train_fixtures import ROOT, tiny_spec, write_config, write_dataset

import fvc
from fvc import commands
from fvc.cli import COMMANDS, build_parser, main
from fvc.core.paths import Layout

HEAVY = ("torch", "polars", "av", "sklearn", "matplotlib", "transformers", "jsonschema")


def run_fvc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fvc.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_help_version_and_exit_codes() -> None:
    alone, helped, version, unknown = run_fvc(), run_fvc("--help"), run_fvc("--version"), run_fvc("trian")
    assert alone.returncode == 2 and all(name in alone.stderr for name in COMMANDS)
    assert helped.returncode == 0 and all(name in helped.stdout for name in COMMANDS)
    assert version.returncode == 0 and version.stdout.strip() == f"fvc {fvc.__version__}"
    assert unknown.returncode == 2 and "unknown command 'trian'" in unknown.stderr
    assert run_fvc("train", "--model", "naive_cnn").returncode == 2  # usage error: --fold missing


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_help_answers_within_a_second(command: str) -> None:
    start = time.perf_counter()
    result = run_fvc(command, "--help")
    seconds = time.perf_counter() - start
    print(f"fvc {command} --help: {seconds:.2f} s")
    assert result.returncode == 0, result.stderr
    assert seconds < 1.0
    assert f"example: fvc {command}" in result.stdout


def test_every_option_shows_its_default() -> None:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in subparsers.choices.items():
        for action in parser._actions:
            if action.required or {"-h", "--debug", "--apply"} & set(action.option_strings):
                continue
            assert "(default: " in (action.help or ""), (name, action.option_strings)


def test_parsing_imports_nothing_heavy() -> None:
    code = (
        "import sys; from fvc.cli import build_parser; "
        "build_parser().parse_args(['train', '--model', 'naive_cnn', '--fold', '0', '--device', 'cpu']); "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with a valid config.yaml, a config with a typo, and a directory where a file is expected."""
    config = yaml.safe_load(
        write_config(tmp_path / "config.yaml", tiny_spec("logistic_regression")).read_text()
    )
    del config["models"]["svm"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["train"]["effective_bach"] = 8
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "a_dir").mkdir()
    return tmp_path


MISTAKES = [
    (["index"], "results/download/videos.csv: no such file; run `fvc download`"),
    (["index", "--videos", "missing.csv"], "missing.csv: no such file"),
    (["index", "--videos", "a_dir"], "a_dir: is a directory"),
    (["download"], "resources/demo/manifest.csv: no such file; run `fvc demo-data`"),
    (["augment"], "results/index/video_index.parquet: no such file; run `fvc index`"),
    (["folds"], "results/augment/clips.csv: no such file; run `fvc augment`"),
    (["folds", "--k", "1"], "folds.k = 1"),
    (
        ["train", "--model", "logistic_regression", "--fold", "0"],
        "clips.csv: no such file; run `fvc augment`",
    ),
    (["train", "--config", "typo.yaml", "--model", "logistic_regression", "--fold", "0"], "effective_bach"),
    (["train", "--config", "nowhere.yaml", "--model", "svm", "--fold", "0"], "nowhere.yaml: no such file"),
    (["train", "--config", "a_dir", "--model", "svm", "--fold", "0"], "a_dir: is a directory"),
    (["train", "--model", "logistic_regression", "--fold", "3"], "--fold 3: folds.k is 3"),
    (["train", "--model", "resnet", "--fold", "0"], "--model 'resnet': no such model"),
    (["train", "--model", "svm", "--fold", "0"], "models.svm: no such row in config.yaml"),
    (["infer", "--model", "logistic_regression"], "no trained model for logistic_regression fold 0"),
    (["infer", "--model", "logistic_regression", "--device", "tpu"], "infer.device = 'tpu'"),
    (["audit", "--workdir", "gone"], "gone: no such workflow directory"),
]


@pytest.mark.parametrize(("argv", "names"), MISTAKES, ids=[" ".join(argv) for argv, _ in MISTAKES])
def test_common_mistakes_print_one_line_and_exit_1(workdir: Path, argv: list[str], names: str) -> None:
    result = run_fvc(*argv, cwd=workdir)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"fvc {argv[0]}: ") and names in line, line


def test_infer_before_train_names_the_command_to_run(workdir: Path) -> None:
    result = run_fvc("infer", "--model", "logistic_regression", cwd=workdir)
    path = Layout("results").exports("logistic_regression").weights(0)
    assert result.stderr.strip() == (
        f"fvc infer: no trained model for logistic_regression fold 0 ({path}): run "
        "`fvc train --model logistic_regression --fold 0` (or the workflow) first"
    )


@pytest.mark.parametrize("where", [["--debug", "index"], ["index", "--debug"]])
def test_debug_shows_the_traceback(workdir: Path, where: list[str]) -> None:
    result = run_fvc(*where, cwd=workdir)
    assert result.returncode == 1 and "Traceback" in result.stderr and "MissingInputError" in result.stderr


def test_unexpected_errors_keep_their_traceback(monkeypatch: pytest.MonkeyPatch, workdir: Path) -> None:
    def broken(args: argparse.Namespace, overrides: dict) -> int:
        raise RuntimeError("a bug")

    monkeypatch.chdir(workdir)
    monkeypatch.setattr(commands, "index", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["index"])


@pytest.mark.usefixtures("one_thread")
def test_train_and_infer_run_on_the_workflow_layout(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """With config.yaml and the tables where the workflow puts them, no path flag is needed."""
    monkeypatch.chdir(workdir)
    layout = Layout("results")
    clips_csv, folds_csv = write_dataset(workdir, videos=12, augmentations=0, k=3, num_frames=4, size=32)
    folds = pl.read_csv(folds_csv)
    test = pl.col("video_id").is_in(["v000.mp4", "v001.mp4"])
    folds = folds.with_columns(
        pl.when(test).then(pl.lit("test")).otherwise("split").alias("split"),
        pl.when(test).then(-1).otherwise("fold").alias("fold"),
    )
    layout.augment.path.mkdir(parents=True)
    layout.folds.path.mkdir(parents=True)
    clips_csv.rename(layout.augment.clips_csv)
    folds.write_csv(layout.folds.folds_csv)
    write_index(
        layout.index.parquet, {"v000.mp4": 0, "v001.mp4": 1}, workdir / "videos"
    )  # infer decodes these
    for fold in range(3):
        assert main(["train", "--model", "logistic_regression", "--fold", str(fold), "--device", "cpu"]) == 0
        assert layout.train("logistic_regression", fold).metrics.exists()
        assert layout.exports("logistic_regression").weights(fold).exists()
    assert main(["infer", "--model", "logistic_regression", "--device", "cpu"]) == 0
    metrics = json.loads(layout.infer("logistic_regression").metrics.read_text())
    assert (
        metrics["videos"] == 2 and json.loads(capsys.readouterr().out.splitlines()[-1]) == metrics["ensemble"]
    )
