"""SIGTERM (preemption, `scancel`, the time limit) reaches training: a snakemake passes it on to its jobs
though Snakemake installs its own SIGTERM handler after the workflow is parsed, never to their DataLoader
workers; on the real test cluster a plainly `scancel`led train job writes its step checkpoint within
KillWait, the retry resumes from that step, and the export is the same as an uninterrupted run's."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from slurm_support import TINY_CONFIG, Background, by_job, sacct, submitted, wait_until
from test_time_limit import RESUMED, STOP, LogLines, assert_export_matches_uninterrupted
from workflow_runner import ROOT, copy_workflow, snakemake

# The job: records SIGTERM like training, and has a Python child of its own (a DataLoader worker's place)
# that must not get the signal.
JOB = """
import subprocess, sys, time
from fvc.train.stopping import stop_signals
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with stop_signals() as stops:
    print("ready", file=sys.stderr, flush=True)
    while not stops.requested:
        time.sleep(0.01)
time.sleep(0.5)
print(stops.name, "worker alive" if worker.poll() is None else "worker ended", flush=True)
worker.kill()
"""
# A snakemake's part: forwarding set up while the workflow is parsed, then a SIGTERM handler of its own (as
# Snakemake's scheduler installs one that waits for the running jobs); its job runs through a shell.
PARENT = """
import os, signal, subprocess, sys
from fvc.train.stopping import forward_stop_signals_to_jobs
assert forward_stop_signals_to_jobs()
signal.signal(signal.SIGTERM, lambda *args: print("graceful", flush=True))
job = subprocess.run(["sh", "-c", '"$PY" -c "$JOB"; true'], stdout=subprocess.PIPE, text=True,
                     env={**os.environ, "PY": sys.executable})
print(job.stdout.strip(), "| parent alive", flush=True)
"""


def test_a_snakemake_passes_sigterm_on_to_its_job_and_not_to_the_jobs_workers():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "JOB": JOB}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert parent.stderr is not None and parent.stderr.readline() == "ready\n"
    parent.send_signal(signal.SIGTERM)
    out, err = parent.communicate(timeout=60)
    assert parent.returncode == 0, err
    assert out.split("\n")[:2] == ["graceful", "SIGTERM worker alive | parent alive"], out


MODEL = "logistic_regression"
STEP_SLEEP_S = 1.0
# One clip per batch (~24 batches in fold 0's epoch), each slowed by STEP_SLEEP_S in the first attempt: the
# job is scancelled mid-epoch. No time-limit warning: only SIGTERM stops it.
CANCELLED = {
    "augment": {"num_augmentations": 5},
    "train": {"models": [MODEL], "device": "cpu", "precision": "fp32", "signal_before_limit_s": 0},
    "models": {MODEL: {"epochs": 1, "runtime": 10, "batch_size": 1, "grad_accum_steps": 8}},
}
# Injected into the workflow copy's job script: in a first attempt every training batch sleeps and is
# counted in `steps_seen` beside the checkpoints.
SLOW_STEPS = f"""
import time as _time
from pathlib import Path as _Path
from fvc.train import training as _training
_forward = _training._forward
_seen = _Path(snakemake.params.checkpoint_dir).parent / "steps_seen"
def _slow_forward(model, *args):
    if model.training:
        _time.sleep({STEP_SLEEP_S})
        with _seen.open("a") as _out:
            _out.write(".")
    return _forward(model, *args)
if not (_Path(snakemake.params.checkpoint_dir) / "state.json").exists():
    _training._forward = _slow_forward
"""


def kill_wait_s() -> int:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"^KillWait\s*=\s*(\d+)", out, re.M)
    assert found, out
    return int(found[1])


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_scancelled_train_job_saves_its_step_and_the_retry_resumes_from_it(
    slurm_cluster: str, tmp_path: Path
):
    workdir = copy_workflow(tmp_path / "cancel", TINY_CONFIG)
    (workdir / "cancel.yaml").write_text(yaml.safe_dump(CANCELLED))
    script = workdir / "workflow_scripts" / "train.py"
    setup = "exit_with_snakemake()\n"
    script.write_text(script.read_text().replace(setup, setup + SLOW_STEPS, 1))
    configfiles = ("test_config.yaml", "cancel.yaml")
    prefix = snakemake(
        workdir, "--configfile", *configfiles, "--profile", "profiles/local", "--until", "folds"
    )
    assert prefix.returncode == 0, prefix.stderr[-4000:]

    target = f"results/train/{MODEL}/fold0/metrics.json"
    seen = workdir / "results" / "train" / MODEL / "fold0" / "steps_seen"
    with LogLines(workdir / "logs" / "train" / MODEL) as lines:
        run = Background.start(workdir, tmp_path / "run.log", target, configfiles=configfiles)
        job = wait_until(lambda: submitted(run.text()), 300, "the train job's submission")[0]
        wait_until(lambda: seen.exists() and len(seen.read_text()) >= 3, 300, "three training steps")
        started = time.monotonic()
        subprocess.run(["scancel", job], check=True)  # SIGTERM, SIGKILL KillWait later
        wait_until(lambda: any(STOP.search(line) for line in lines), 60, "the stop line")
        saved_within_s = time.monotonic() - started
        assert run.wait(timeout=900) == 0, run.text()[-6000:]
    log = "\n".join(sorted(lines, key=lambda line: line.startswith("resumed")))
    print(log, f"\nstep checkpoint {saved_within_s:.1f} s after scancel, KillWait {kill_wait_s()} s")
    stops, resumes = STOP.findall(log), RESUMED.findall(log)
    assert [(sig, kind) for *_, sig, kind in stops] == [("SIGTERM", "step")], log
    assert int(stops[0][1]) >= 3 and resumes == [stops[0][:2]], log
    jobs = by_job(sacct(submitted(run.text())))
    states = [rows[0]["State"] for _, rows in sorted(jobs.items(), key=lambda item: int(item[0]))]
    print("attempts:", states)
    assert states[0].startswith("CANCELLED") and states[-1] == "COMPLETED", states

    assert_export_matches_uninterrupted(workdir, configfiles, tmp_path / "reference")
