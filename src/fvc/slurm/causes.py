"""Why a SLURM job failed, read from what it left behind: the plugin's message, the job's SLURM log
(`.snakemake/slurm_logs/rule_<rule>/<wildcards>/<jobid>.log`) and fvc's own log of the attempt."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fvc.core.joblog import ATTEMPT_HEADER, attempts_log

# sbatch's answer when it refuses a job, as the plugin words it ("SLURM sbatch failed. The error message was
# 'sbatch: error: ...'").
SBATCH_REFUSED = re.compile(r"SLURM sbatch failed\. The error message was '(?P<error>.*?)'\.$", re.M | re.S)
# (category, what SLURM writes into the job's log, the job's state): the limits SLURM enforces.
ENFORCED = (
    (
        "out-of-memory",
        re.compile(r"^.*(oom-kill event|oom_kill|Exceeded job memory limit).*$", re.M),
        "OUT_OF_MEMORY",
    ),
    ("timeout", re.compile(r"^.*DUE TO TIME LIMIT.*$", re.M), "TIMEOUT"),
    ("preempted", re.compile(r"^.*DUE TO PREEMPTION.*$", re.M), "PREEMPTED"),
    ("node-fail", re.compile(r"^.*DUE TO NODE FAILURE.*$", re.M), "NODE_FAIL"),
)
CANCELLED = re.compile(r"^.*CANCELLED AT.*$", re.M)
TRACEBACK = "Traceback (most recent call last):"
STATE = re.compile(r"SLURM status is: '(?P<state>[A-Z_]+)")


@dataclass(frozen=True)
class Cause:
    """A failure's category (`sbatch-refused`, `out-of-memory`, `timeout`, `preempted`, `node-fail`,
    `cancelled`, `exception`, `unknown`) and the log line that shows it."""

    category: str
    line: str

    def __str__(self) -> str:
        return f"{self.category}: {self.line}"


def exception_line(text: str) -> str | None:
    """The last line of the last Python traceback in `text` (`RuntimeError: torch sees no GPU`), if any."""
    start = text.rfind(TRACEBACK)
    if start < 0:
        return None
    lines = text[start:].splitlines()[1:]
    body = [line for line in lines if line.strip()]
    for line in body:
        if not line[0].isspace() and not line.startswith(("Traceback", "During handling", "The above")):
            return line.strip()
    return None


def attempt_text(history: str, slurm_job_id: str | None) -> str:
    """The part of a job's history log (`fvc.core.joblog.attempts_log`) written by SLURM job `slurm_job_id`;
    the last attempt's part without an id (a local run), the whole text without headers."""
    headers = list(ATTEMPT_HEADER.finditer(history))
    if not headers:
        return history
    picked = [i for i, m in enumerate(headers) if slurm_job_id and m["job"] == slurm_job_id]
    if slurm_job_id and not picked:
        return ""
    i = picked[-1] if picked else len(headers) - 1
    end = headers[i + 1].start() if i + 1 < len(headers) else len(history)
    return history[headers[i].start() : end]


def _read(path: str | Path | None) -> str:
    try:
        return Path(path).read_text(errors="replace") if path else ""
    except OSError:
        return ""


def fvc_log_text(log: str | Path | None, slurm_job_id: str | None) -> str:
    """What fvc logged in the attempt run as `slurm_job_id`: its part of the history log beside `log`, else
    `log` itself (written before history logs existed)."""
    if not log:
        return ""
    history = _read(attempts_log(log))
    return attempt_text(history, slurm_job_id) if history else _read(log)


def failure_cause(
    message: str = "",
    slurm_log: str | Path | None = None,
    fvc_log: str | Path | None = None,
    slurm_job_id: str | None = None,
) -> Cause:
    """The cause of one failed attempt, from the plugin's `message` (Snakemake's `message:` line of the
    error), the job's SLURM log and fvc's log (`log:` of the rule; its attempt is picked by `slurm_job_id`).
    The resource limits SLURM enforces come first (they kill whatever the code was doing), then the
    exception the code raised, then the state alone."""
    refused = SBATCH_REFUSED.search(message)
    if refused:
        return Cause("sbatch-refused", refused["error"].strip().splitlines()[-1].strip())
    slurm_text = _read(slurm_log)
    state_match = STATE.search(message)
    state = state_match["state"] if state_match else ""
    for category, pattern, enforced_state in ENFORCED:
        found = pattern.search(slurm_text)
        if found:
            return Cause(category, found[0].strip())
        if state == enforced_state:
            return Cause(category, message.strip().splitlines()[0])
    fvc_text = fvc_log_text(fvc_log, slurm_job_id)
    raised = exception_line(fvc_text) or exception_line(slurm_text)
    if raised:
        return Cause("exception", raised)
    cancelled = CANCELLED.search(slurm_text)
    if cancelled or state == "CANCELLED":
        return Cause("cancelled", cancelled[0].strip() if cancelled else message.strip().splitlines()[0])
    return Cause("unknown", message.strip().splitlines()[0] if message.strip() else "no message")
