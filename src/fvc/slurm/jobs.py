"""Which SLURM jobs a workflow directory's runs submitted, and the rule, model and fold each ran.

Jobs are found from what snakemake-executor-plugin-slurm leaves in the workflow directory: its job logs
`.snakemake/slurm_logs/rule_<rule>/<wildcards>/<jobid>.log` (kept for failed jobs, and for all jobs with
`slurm-keep-successful-logs`) and the "submitted with SLURM jobid" lines of every run's
`.snakemake/log/*.snakemake.log`.

Jobs submitted as a SLURM job array (profile `slurm-array-jobs`) are array tasks `<jobid>_<task>`. For them
the plugin (2.8.0) writes one line per array, "Submitted array job with Snakemake IDs 2,3,1,4 and SLURM job
ID 903. The individual task IDs are 1-4." (task `start + i` runs the i-th Snakemake job, whose wildcards the
log's `rule <rule>:` block of that job id gives), logs each task to `rule_<rule>/<jobid>_<task>.log`
(without the wildcards folder, whose path the plugin names nevertheless), and gives every task of an array the
first task's comment: the comment names the rule, never a task's wildcards. A task's log also names its
wildcards itself (the job's snakemake `--target-jobs <rule>:<name>=<value>,...`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fvc.core.config import MODEL_NAMES

SUBMIT_RE = re.compile(r"submitted with SLURM jobid (?P<id>[\w.+]+) \(log: (?P<log>.+?)\)\.?\s*$")
ARRAY_RE = re.compile(
    r"Submitted array job with Snakemake IDs (?P<jobs>[\d,]+) and SLURM job ID (?P<id>\d+)\. "
    r"The individual task IDs are (?P<first>\d+)-(?P<last>\d+)\."
)
# Snakemake's report of a job it runs: `rule <rule>:` (or `localrule`), then indented fields.
RULE_RE = re.compile(r"^(?:local)?rule (?P<rule>\w+):$")
FIELD_RE = re.compile(r"^    (?P<key>jobid|wildcards): (?P<value>.*)$")
TARGET_RE = re.compile(r"--target-jobs (?P<rule>\w+):(?P<wildcards>\S*)")
ARRAY_TASK_RE = re.compile(r"\d+_\d+")


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


def wildcard_values(text: str, separator: str) -> str:
    """Snakemake's wildcards (`model=a, fold=0`, separator `, `; `model=a,fold=0`, separator `,`) as the
    plugin joins them: the values by `_`, `/` replaced by `_`."""
    pairs = [item.partition("=") for item in text.split(separator) if item]
    return "_".join(value for _, _, value in pairs).replace("/", "_")


def snakemake_log_jobs(text: str) -> dict[str, JobRef]:
    """The SLURM jobs and array tasks that one Snakemake log reports submitting."""
    refs: dict[str, JobRef] = {}
    runs: dict[str, tuple[str, str]] = {}  # Snakemake job id -> (rule, wildcards) of its latest report
    rule = jobid = None
    for line in text.splitlines():
        if match := RULE_RE.match(line):
            rule, jobid = match["rule"], None
        elif rule and (field := FIELD_RE.match(line)):
            if field["key"] == "jobid":
                jobid = field["value"].strip()
                runs[jobid] = (rule, "")
            elif jobid is not None:
                runs[jobid] = (rule, wildcard_values(field["value"].strip(), ", "))
        elif not line.startswith("    "):
            rule = None
        if match := SUBMIT_RE.search(line):
            if ref := _ref_from_log_path(Path(match["log"]), match["id"]):
                refs[ref.job_id] = ref
        elif match := ARRAY_RE.search(line):
            for task, jobid_ in enumerate(match["jobs"].split(","), int(match["first"])):
                if jobid_ in runs:
                    refs[f"{match['id']}_{task}"] = JobRef(f"{match['id']}_{task}", *runs[jobid_])
    return refs


def _ref_from_task_log(path: Path, job_id: str) -> JobRef | None:
    """Rule and wildcards of an array task from its SLURM log `rule_<rule>/<jobid>_<task>.log`: the last
    `--target-jobs` of the job's snakemake (the first one may be the array's first task's)."""
    try:
        targets = TARGET_RE.findall(path.read_text(errors="replace"))
    except OSError:
        return None
    if not targets:
        return None
    rule, wildcards = targets[-1]
    return JobRef(job_id, rule, wildcard_values(wildcards, ","))


def discover_jobs(workdir: str | Path) -> dict[str, JobRef]:
    """Every SLURM job (and array task) of this workflow directory over all its runs, by job id."""
    workdir = Path(workdir)
    refs: dict[str, JobRef] = {}
    for logfile in sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log")):
        refs.update(snakemake_log_jobs(logfile.read_text(errors="replace")))
    for logfile in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log")):
        job_id = logfile.stem
        if job_id in refs or not re.fullmatch(r"\d+(_\d+)?", job_id):
            continue
        in_rule_folder = logfile.parent.name.startswith("rule_")
        if ARRAY_TASK_RE.fullmatch(job_id) and in_rule_folder:
            ref = _ref_from_task_log(logfile, job_id)
        else:
            ref = _ref_from_log_path(logfile, job_id)
        if ref is not None:
            refs[job_id] = ref
    return refs


def split_wildcards(wildcards: str) -> tuple[str | None, int | None]:
    """(model, fold) from the plugin's wildcard string, e.g. `naive_cnn_0` -> ('naive_cnn', 0)."""
    return split_member(wildcards)[:2]


def split_member(wildcards: str) -> tuple[str | None, int | None, int | None]:
    """(model, fold, seed) from the plugin's wildcard string: `naive_cnn_0` -> ('naive_cnn', 0, None), and in
    a grid over seeds `naive_cnn_0_7` -> ('naive_cnn', 0, 7)."""
    model = next(
        (
            m
            for m in sorted(MODEL_NAMES, key=len, reverse=True)
            if wildcards == m or wildcards.startswith(m + "_")
        ),
        None,
    )
    if model is None:
        return None, None, None
    parts = wildcards[len(model) + 1 :].split("_")
    if not all(part.isdigit() for part in parts) or len(parts) > 2:
        return model, None, None
    numbers = [int(part) for part in parts]
    return model, numbers[0], numbers[1] if len(numbers) == 2 else None


def id_order(job_id: str) -> tuple[int, ...]:
    """Sort key of a job id (`12`, `12_3`): ids grow with submission time."""
    return tuple(int(p) for p in re.findall(r"\d+", job_id))
