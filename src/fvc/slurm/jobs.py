"""Which SLURM jobs a workflow directory's runs submitted, and the rule, model and fold each ran.

Jobs are found from what snakemake-executor-plugin-slurm leaves in the workflow directory: its job logs
`.snakemake/slurm_logs/rule_<rule>/<wildcards>/<jobid>.log` (kept for failed jobs, and for all jobs with
`slurm-keep-successful-logs`) and the "submitted with SLURM jobid" lines of every run's
`.snakemake/log/*.snakemake.log`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fvc.core.config import MODEL_NAMES

SUBMIT_RE = re.compile(r"submitted with SLURM jobid (?P<id>[\w.+]+) \(log: (?P<log>.+?)\)\.?\s*$")


@dataclass(frozen=True)
class JobRef:
    """A SLURM job the workflow submitted, as the plugin's files name it."""

    job_id: str
    rule: str
    wildcards: str


def _ref_from_log_path(path: Path, job_id: str) -> JobRef | None:
    """Rule and wildcards from `.../slurm_logs/rule_<rule>[/<wildcards>]/<jobid>.log`."""
    parts = path.parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i].startswith("rule_"):
            wildcards = "_".join(parts[i + 1 : -1])
            return JobRef(job_id, parts[i][len("rule_") :], wildcards)
    return None


def parse_comment(comment: str) -> tuple[str, str] | None:
    """(rule, wildcards) from the plugin's job comment `rule_<rule>[_wildcards_<values joined by _>]`."""
    if not comment.startswith("rule_"):
        return None
    rule, _, wildcards = comment[len("rule_") :].partition("_wildcards_")
    return rule, wildcards


def discover_jobs(workdir: str | Path) -> dict[str, JobRef]:
    """Every SLURM job of this workflow directory over all its runs, by job id."""
    workdir = Path(workdir)
    refs: dict[str, JobRef] = {}
    for logfile in sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log")):
        for line in logfile.read_text(errors="replace").splitlines():
            match = SUBMIT_RE.search(line)
            if match and (ref := _ref_from_log_path(Path(match["log"]), match["id"])):
                refs[ref.job_id] = ref
    for logfile in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log")):
        job_id = logfile.stem
        if re.fullmatch(r"\d+(_\d+)?", job_id) and (ref := _ref_from_log_path(logfile, job_id)):
            refs.setdefault(job_id, ref)
    return refs


def split_wildcards(wildcards: str) -> tuple[str | None, int | None]:
    """(model, fold) from the plugin's wildcard string, e.g. `naive_cnn_0` -> ('naive_cnn', 0)."""
    model = next(
        (
            m
            for m in sorted(MODEL_NAMES, key=len, reverse=True)
            if wildcards == m or wildcards.startswith(m + "_")
        ),
        None,
    )
    if model is None:
        return None, None
    rest = wildcards[len(model) + 1 :]
    return model, int(rest) if rest.isdigit() else None


def id_order(job_id: str) -> tuple[int, ...]:
    """Sort key of a job id (`12`, `12_3`): ids grow with submission time."""
    return tuple(int(p) for p in re.findall(r"\d+", job_id))
