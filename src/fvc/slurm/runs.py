"""The config each workflow run really used, recorded when it starts, and found again by its SLURM run id.

The Snakefile's `onstart` writes `logs/runs/<its snakemake log's name>.yaml`: the merged config (config.yaml,
every `--configfile`, `--config` overrides, schema defaults), the config files and the log. The SLURM
plugin names every job of a run after the run id it prints into that log (`SLURM run ID: <id>`), so the
audit goes from a job's name to the log, and from the log to the record."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterable
from pathlib import Path

import yaml

from fvc.core.atomic import write_text

RUNS_DIR = Path("logs", "runs")
RUN_ID_RE = re.compile(r"SLURM run ID: (?P<id>\S+)")


def record_run(
    config: dict,
    configfiles: Iterable[str | Path],
    snakemake_log: str | Path | Iterable[str | Path] | None,
    workdir: str | Path = ".",
) -> Path:
    """Write the run's record (merged config, config files, log, start time); return its path.

    `snakemake_log`: the run's log, or `onstart`'s `log` (Snakemake 9: a list of its log files)."""
    logs = [snakemake_log] if isinstance(snakemake_log, (str, Path)) else list(snakemake_log or [])
    log = next((Path(f) for f in logs if str(f).endswith(".snakemake.log")), None)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    name = log.name.removesuffix(".snakemake.log") if log else started.replace(":", "")
    record = {
        "started": started,
        "snakemake_log": str(log) if log else None,
        "configfiles": [str(f) for f in configfiles],
        "config": config,
    }
    path = Path(workdir, RUNS_DIR, f"{name}.yaml")
    plain = json.loads(json.dumps(record, default=str))  # Snakemake's config may hold dict subclasses
    write_text(path, yaml.safe_dump(plain, sort_keys=False))
    return path


def run_logs(workdir: str | Path) -> dict[str, Path]:
    """SLURM run id -> the snakemake log of the run that printed it."""
    runs = {}
    for log in sorted(Path(workdir, ".snakemake", "log").glob("*.snakemake.log")):
        with log.open(errors="replace") as fh:
            for line in fh:
                if match := RUN_ID_RE.search(line):
                    runs[match["id"]] = log
                    break
    return runs


def run_record(workdir: str | Path, run_id: str) -> tuple[Path, dict] | None:
    """The record of the run whose jobs carry the name `run_id`, or None (a run before records were kept,
    a run without the SLURM plugin, or a record deleted)."""
    log = run_logs(workdir).get(run_id)
    if log is None:
        return None
    path = Path(workdir, RUNS_DIR, f"{log.name.removesuffix('.snakemake.log')}.yaml")
    if not path.is_file():
        return None
    return path, yaml.safe_load(path.read_text())
