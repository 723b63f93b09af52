"""Reruns follow config edits: after one tiny run, `snakemake -n` on an edited config plans exactly the jobs
whose params changed (and what depends on them), naming the changed keys; a resources edit plans nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from workflow_runner import snakemake

pytestmark = pytest.mark.slow

JOB_HEADER = re.compile(r"^(?:local)?rule (\w+):$")


@pytest.fixture()
def finished_run(tiny_local_run: Path) -> Path:
    """The session's finished tiny workflow run (conftest)."""
    return tiny_local_run


@contextmanager
def edited_config(workdir: Path, edit) -> Iterator[None]:
    """The run's test config with `edit(config)` applied, restored afterwards."""
    path = workdir / "test_config.yaml"
    original = path.read_text()
    config = yaml.safe_load(original)
    edit(config)
    path.write_text(yaml.safe_dump(config))
    try:
        yield
    finally:
        path.write_text(original)


def planned_jobs(workdir: Path) -> list[dict[str, str]]:
    """The jobs `snakemake -n` plans: rule, wildcards and reason of each."""
    result = snakemake(workdir, "--profile", "profiles/local", "-n")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    jobs: list[dict[str, str]] = []
    for line in result.stdout.splitlines():
        header = JOB_HEADER.match(line.strip())
        if header:
            jobs.append({"rule": header.group(1), "wildcards": "", "reason": ""})
        elif jobs and ":" in line and line.startswith("    "):
            key, value = line.strip().split(":", 1)
            if key in ("wildcards", "reason"):
                jobs[-1][key] = value.strip()
    return jobs


def rules_of(jobs: list[dict[str, str]]) -> set[str]:
    return {job["rule"] for job in jobs}


def test_unedited_config_plans_nothing(finished_run: Path) -> None:
    assert planned_jobs(finished_run) == []


def test_a_models_epochs_edit_retrains_that_model_only(finished_run: Path) -> None:
    def edit(config: dict) -> None:
        config["models"]["logistic_regression"]["epochs"] = 2

    with edited_config(finished_run, edit):
        jobs = planned_jobs(finished_run)
    assert rules_of(jobs) == {"train", "infer", "audit", "all"}
    train = [job for job in jobs if job["rule"] == "train"]
    assert sorted(job["wildcards"] for job in train) == [
        "model=logistic_regression, fold=0",
        "model=logistic_regression, fold=1",
    ]
    for job in train:
        assert "Params have changed since last execution" in job["reason"], job
        assert "'epochs': 1" in job["reason"] and "'epochs': 2" in job["reason"], job
    (infer,) = (job for job in jobs if job["rule"] == "infer")
    assert infer["wildcards"] == "model=logistic_regression"


def test_a_params_edit_inside_a_models_row_retrains_it(finished_run: Path) -> None:
    def edit(config: dict) -> None:
        config["models"]["naive_cnn"]["params"] = {"widths": [8, 16, 32]}

    with edited_config(finished_run, edit):
        jobs = planned_jobs(finished_run)
    train = [job for job in jobs if job["rule"] == "train"]
    assert {job["wildcards"].split(",")[0] for job in train} == {"model=naive_cnn"}
    assert all("'widths': [8, 16, 32]" in job["reason"] for job in train)


def test_memory_and_runtime_edits_plan_nothing(finished_run: Path) -> None:
    def edit(config: dict) -> None:
        row = config["models"]["logistic_regression"]
        row.update(mem_mb=2345, infer_mem_mb=2222, runtime=99)
        config["resources"] = {"augment": {"mem_mb": 3000, "runtime": 120}}

    with edited_config(finished_run, edit):
        assert planned_jobs(finished_run) == []


def test_an_augment_edit_reruns_augment_and_what_follows(finished_run: Path) -> None:
    def edit(config: dict) -> None:
        config["augment"]["num_augmentations"] = 2

    with edited_config(finished_run, edit):
        jobs = planned_jobs(finished_run)
    assert rules_of(jobs) == {"augment_shard", "augment", "folds", "train", "infer", "audit", "all"}
    (augment,) = (job for job in jobs if job["rule"] == "augment_shard")  # the merge: its input is updated
    assert "Params have changed" in augment["reason"]
    assert "'num_augmentations': 1" in augment["reason"] and "'num_augmentations': 2" in augment["reason"]


def test_a_folds_edit_reruns_folds_but_not_the_data_stages(finished_run: Path) -> None:
    def edit(config: dict) -> None:
        config["folds"]["test_fraction"] = 0.3

    with edited_config(finished_run, edit):
        jobs = planned_jobs(finished_run)
    assert rules_of(jobs) == {"folds", "train", "infer", "audit", "all"}
    (folds,) = (job for job in jobs if job["rule"] == "folds")
    assert "'test_fraction': 0.3" in folds["reason"]
