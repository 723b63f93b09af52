"""A train job on the real test SLURM cluster whose time limit (1 min) is shorter than its epoch: SLURM's
warning signal (`train.signal_before_limit_s`) stops it with a step checkpoint, the retry resumes from that
step, and the export is the same as an uninterrupted run's."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from pathlib import Path

import pytest
import yaml
from slurm_support import TINY_CONFIG, by_job, run_snakemake, sacct, submitted
from workflow_runner import copy_workflow, snakemake

from fvc.core.config import model_specs
from fvc.core.paths import Layout
from fvc.train.stopping import warning_lead_s, warning_signal_option
from fvc.train.training import train_fold

MODEL = "logistic_regression"
STEP_SLEEP_S = 6.0
# One clip per batch, 6 clips per video (~24 batches in fold 0's epoch), each slowed by STEP_SLEEP_S in the
# first attempt (the one without a checkpoint): an epoch of 140 s and more, past the 2-minute limit. On this
# busy machine the job trains from ~40 s on; SIGUSR1 comes 30 s before the limit (a quarter of it, the most a
# warning may take: `warning_lead_s`; SLURM sends it up to ~15 s early).
# The retry, resumed from the step checkpoint, runs at full speed.
LIMITED = {
    "augment": {"num_augmentations": 5},
    "train": {"models": [MODEL], "device": "cpu", "precision": "fp32", "signal_before_limit_s": 30},
    "models": {MODEL: {"epochs": 1, "runtime": 2, "batch_size": 1, "grad_accum_steps": 8}},
}
# Injected into the workflow copy's job script (after its set-up lines): in a first attempt every training
# batch sleeps.
SLOW_STEPS = f"""
import time as _time
from pathlib import Path as _Path
from fvc.train import training as _training
_forward = _training._forward
def _slow_forward(model, *args):
    if model.training:
        _time.sleep({STEP_SLEEP_S})
    return _forward(model, *args)
if not (_Path(snakemake.params.checkpoint_dir) / "state.json").exists():
    _training._forward = _slow_forward
"""
STOP = re.compile(r"stopping at epoch (\d+) step (\d+) on (SIG\w+): (step|epoch) checkpoint written")
RESUMED = re.compile(r"resumed from epoch (\d+) step (\d+)")


class LogLines(set):
    """The stop and resume lines of the job logs in `folder`, read while the run goes on (an attempt may start
    its log anew)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder, self.done = folder, threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        while True:
            finished = self.done.is_set()
            for path in self.folder.glob("fold0*.log"):
                with contextlib.suppress(OSError):
                    text = path.read_text()
                    self.update(m.group(0) for pattern in (STOP, RESUMED) for m in pattern.finditer(text))
            if finished:
                return
            time.sleep(0.2)

    def __enter__(self) -> LogLines:
        self.reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.reader.join()


def merged_config(workdir: Path, *configfiles: str) -> dict:
    """config.yaml with the config files merged in, as Snakemake merges --configfile."""

    def merge(base: dict, extra: dict) -> dict:
        for key, value in extra.items():
            base[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
        return base

    config = yaml.safe_load((workdir / "config.yaml").read_text())
    for path in configfiles:
        merge(config, yaml.safe_load((workdir / path).read_text()))
    return config


def assert_export_matches_uninterrupted(workdir: Path, configfiles: tuple[str, ...], reference: Path) -> None:
    """MODEL's fold-0 export in `workdir` is byte for byte that of one uninterrupted `train_fold` (written in
    `reference`) on the same clips, folds and config."""
    config = merged_config(workdir, *configfiles)
    layout = Layout(config["results_dir"])
    train_fold(
        workdir / layout.augment.clips_csv,
        workdir / layout.folds.folds_csv,
        0,
        model_specs(config)[MODEL],
        reference / "metrics.json",
        reference / "fold0.safetensors",
        reference / "checkpoints",
        root=workdir,
        device="cpu",
        seed=config["seed"],
        precision="fp32",
    )
    exported = workdir / layout.exports(MODEL).weights(0)
    assert exported.read_bytes() == (reference / "fold0.safetensors").read_bytes()


@pytest.mark.parametrize(
    ("lead_s", "limit_min", "option"),
    [
        (120, 1, ""),  # the old rule warned at half the limit: 30 s into a 1-minute job
        (120, 7, ""),
        (120, 8, "--signal=USR1@120"),
        (120, 600, "--signal=USR1@120"),
        (30, 2, "--signal=USR1@30"),
        (40, 2, ""),
        (0, 600, ""),
    ],
)
def test_the_warning_takes_at_most_a_quarter_of_the_time_limit(lead_s: int, limit_min: int, option: str):
    assert warning_signal_option(warning_lead_s(lead_s, limit_min)) == option


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_job_past_its_time_limit_resumes_from_its_step_checkpoint(slurm_cluster: str, tmp_path: Path):
    workdir = copy_workflow(tmp_path / "limit", TINY_CONFIG)
    (workdir / "limit.yaml").write_text(yaml.safe_dump(LIMITED))
    script = workdir / "workflow_scripts" / "train.py"
    text = script.read_text()
    setup = "exit_with_snakemake()\n"
    script.write_text(text.replace(setup, setup + SLOW_STEPS, 1))
    configfiles = ("test_config.yaml", "limit.yaml")
    prefix = snakemake(
        workdir, "--configfile", *configfiles, "--profile", "profiles/local", "--until", "folds"
    )
    assert prefix.returncode == 0, prefix.stderr[-4000:]

    target = f"results/train/{MODEL}/fold0/metrics.json"
    with LogLines(workdir / "logs" / "train" / MODEL) as lines:
        result = run_snakemake(workdir, target, configfiles=configfiles, timeout=900)
    assert result.returncode == 0, result.stdout[-6000:]
    log = "\n".join(sorted(lines, key=lambda line: line.startswith("resumed")))
    print(log)
    stops, resumes = STOP.findall(log), RESUMED.findall(log)
    assert [kind for *_, kind in stops] == ["step"] and stops[0][2] == "SIGUSR1", log
    assert resumes == [stops[0][:2]], log
    metrics = json.loads((workdir / target).read_text())
    assert (metrics["resumed_from_epoch"], metrics["resumed_from_step"]) == tuple(map(int, stops[0][:2]))
    jobs = by_job(sacct(submitted(result.stdout)))
    states = [rows[0]["State"] for _, rows in sorted(jobs.items(), key=lambda item: int(item[0]))]
    print("attempts:", states)
    assert len(states) >= 2 and states[-1] == "COMPLETED", states

    assert_export_matches_uninterrupted(workdir, configfiles, tmp_path / "reference")
