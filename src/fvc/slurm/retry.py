"""Resources of a retried SLURM job, sized by why its previous attempt failed.

When Snakemake computes a job's `mem_mb` and `runtime` for attempt > 1, the previous attempt of the same rule
and wildcards is found as the audit finds jobs (`fvc.slurm.jobs.discover_jobs`: the plugin's logs and
Snakemake's), limited to jobs submitted since this run started, and sacct says how it ended:

- OUT_OF_MEMORY: memory = max(previous request x memory_growth, its measured peak x memory_safety), the peak
  being the one SLURM enforces (the cgroup's, from the attempt's memory log: the records written while it
  ran) where the attempt recorded it, sacct's MaxRSS (which also counts shared pages) otherwise;
- TIMEOUT, or FAILED after training stopped on SLURM's time-limit warning (SIGUSR1: fvc's log of that
  attempt says so): runtime = previous time limit x runtime_growth, at most max_runtime; memory unchanged;
- NODE_FAIL, PREEMPTED, CANCELLED (by anyone), BOOT_FAIL, DEADLINE, FAILED with an exit code (the code's
  own failure), COMPLETED (outputs missing): the same resources;
- FAILED by a signal, or no previous job / no sacct (local runs): the first request x memory_growth per retry,
  as before retries knew causes.

Each decision is logged (one line) and appended to a CSV that the audit can read."""

from __future__ import annotations

import csv
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

from fvc.slurm.causes import fvc_log_text
from fvc.slurm.jobs import discover_jobs, id_order
from fvc.slurm.rows import enforced_peak, job_records
from fvc.slurm.sacct import FIELDS, MB, Job, SacctUnavailable, read_sacct

log = logging.getLogger(__name__)

#: States after which the next attempt asks for the same resources (the cause was not the request).
SAME_RESOURCES = {"NODE_FAIL", "PREEMPTED", "CANCELLED", "BOOT_FAIL", "DEADLINE", "COMPLETED"}
#: Seconds of clock difference allowed between this machine and slurmctld's Submit times.
CLOCK_SLACK_S = 2.0
#: fvc's log line of a training stopped by SLURM's time-limit warning (`fvc.train.training`).
WARNED = re.compile(r"stopping at epoch \d+ step \d+ on SIGUSR1")
LOG_COLUMNS = (
    "time",
    "rule",
    "wildcards",
    "attempt",
    "previous_job",
    "previous_state",
    "exit_code",
    "peak_mb",
    "old_mem_mb",
    "new_mem_mb",
    "old_runtime",
    "new_runtime",
    "reason",
)

SacctReader = Callable[..., dict[str, Job]]


@dataclass(frozen=True)
class Request:
    """What a job asks SLURM for: memory (MB, sbatch --mem) and runtime (minutes, sbatch -t)."""

    mem_mb: int
    runtime: int


@dataclass(frozen=True)
class Policy:
    """The config keys that size retries (config.yaml: memory_growth, runtime_growth, max_runtime,
    memory_safety)."""

    memory_growth: float
    runtime_growth: float
    max_runtime: int
    memory_safety: float

    @classmethod
    def from_config(cls, config: Mapping) -> Policy:
        return cls(
            memory_growth=config["memory_growth"],
            runtime_growth=config["runtime_growth"],
            max_runtime=config["max_runtime"],
            memory_safety=config["memory_safety"],
        )

    def blind(self, first: Request, attempt: int) -> Request:
        """The request when the cause is unknown: the first one with memory_growth x more memory per retry."""
        return Request(int(first.mem_mb * self.memory_growth ** (attempt - 1)), first.runtime)


@dataclass(frozen=True)
class Attempt:
    """A finished SLURM job as sacct reports it: how it ended, what it asked for and its peak memory."""

    job_id: str
    state: str
    exit_code: str
    request: Request
    peak_mb: float | None
    warned: bool = False  # training stopped on the time-limit warning (a step checkpoint, then exit 75)
    peak_source: str = "MaxRSS"  # or `cgroup`: the peak SLURM's limit applies to, from the memory log
    ran: tuple[float | None, float | None] = (None, None)  # its Start and End (Unix times)

    @classmethod
    def from_job(cls, job: Job) -> Attempt | None:
        """None when sacct lacks the job's requested memory or time limit."""
        alloc = job.allocation
        if alloc is None or job.req_mem is None or alloc.time_limit_s is None:
            return None
        request = Request(round(job.req_mem / MB), math.ceil(alloc.time_limit_s / 60))
        peak = None if job.max_rss is None else job.max_rss / MB
        ran = (unix_time(alloc.start), unix_time(alloc.end))
        return cls(job.job_id, job.state, alloc.exit_code, request, peak, ran=ran)

    def with_enforced_peak(self, memory_log: Path) -> Attempt:
        """This attempt with the cgroup peak its job's memory log recorded while it ran (within its request,
        as the audit takes it: a larger one is not the job's own cgroup), unchanged when there is none."""
        start, end = self.ran
        if start is None or end is None or not memory_log.is_file():
            return self
        peak = enforced_peak(job_records(memory_log, start, end), self.request.mem_mb)
        if peak is None:
            return self
        return replace(self, peak_mb=peak, peak_source="cgroup")

    @property
    def signal(self) -> int:
        """The signal that ended the job (sacct ExitCode `<code>:<signal>`), 0 if none."""
        _, _, signal = self.exit_code.partition(":")
        return int(signal) if signal.isdigit() else 0


@dataclass(frozen=True)
class Decision:
    """The next attempt's request and why."""

    request: Request
    reason: str


def decide(previous: Attempt, policy: Policy) -> Decision | None:
    """The next request after `previous` failed; None when its end names no cause (signal, unknown state)."""
    old, state = previous.request, previous.state
    if state == "OUT_OF_MEMORY":
        grown = math.ceil(old.mem_mb * policy.memory_growth)
        if previous.peak_mb is not None and previous.peak_mb * policy.memory_safety > grown:
            mem = math.ceil(previous.peak_mb * policy.memory_safety)
            why = f"peak {previous.peak_mb:.0f} MB ({previous.peak_source})"
            return Decision(Request(mem, old.runtime), f"{why} x memory_safety {policy.memory_safety}")
        return Decision(Request(grown, old.runtime), f"request x memory_growth {policy.memory_growth}")
    if state == "TIMEOUT" or (state == "FAILED" and previous.warned):
        runtime = max(min(math.ceil(old.runtime * policy.runtime_growth), policy.max_runtime), old.runtime)
        cap = " (max_runtime)" if runtime == policy.max_runtime else ""
        warned = ", stopped on the time-limit warning" if previous.warned else ""
        return Decision(
            Request(old.mem_mb, runtime), f"time limit x runtime_growth {policy.runtime_growth}{cap}{warned}"
        )
    if state == "FAILED" and previous.signal == 0:
        return Decision(old, f"the job's own failure (exit {previous.exit_code}): same resources")
    if state in SAME_RESOURCES:
        return Decision(old, f"{state.lower()}: same resources")
    return None


def unix_time(text: str) -> float | None:
    """A sacct time (`2026-11-29T20:09:49`, slurmctld's local time) as a Unix time; None if unknown."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def submitted_at(job: Job) -> float | None:
    """The job's Submit time as a Unix time; None if unknown."""
    alloc = job.allocation
    return unix_time(alloc.submit) if alloc is not None else None


def previous_attempt(
    workdir: Path, rule: str, wildcards: str, since: float, sacct: SacctReader = read_sacct
) -> Attempt | None:
    """The latest job of `rule` and `wildcards` submitted since `since` (Unix time), as sacct reports it."""
    ids = [
        ref.job_id
        for ref in discover_jobs(workdir).values()
        if (ref.rule, ref.wildcards) == (rule, wildcards)
    ]
    if not ids:
        return None
    jobs = sacct(ids, fields=FIELDS)
    recent = [
        job for job in jobs.values() if (submit := submitted_at(job)) and submit >= since - CLOCK_SLACK_S
    ]
    if not recent:
        return None
    return Attempt.from_job(max(recent, key=lambda job: id_order(job.job_id)))


def wildcard_string(values: Iterable[str]) -> str:
    """A job's wildcards as snakemake-executor-plugin-slurm writes them in log folders and job comments."""
    return "_".join(str(value) for value in values).replace("/", "_")


class RetrySizer:
    """Requests of every job attempt of one Snakemake run (its driver), each retry decided once."""

    def __init__(
        self,
        workdir: str | Path,
        policy: Policy,
        since: float,
        log_csv: str | Path,
        *,
        enabled: bool = True,
        sacct: SacctReader = read_sacct,
        announce: Callable[[str], None] = log.warning,
    ) -> None:
        self.workdir, self.policy, self.since, self.log_csv = Path(workdir), policy, since, Path(log_csv)
        self.enabled, self.sacct, self.announce = enabled, sacct, announce
        self._decided: dict[tuple[str, str, int], Request] = {}

    def request(
        self,
        rule: str,
        wildcards: Sequence[str],
        attempt: int,
        first: Request,
        log: str | None = None,
        memory_log: str | None = None,
    ) -> Request:
        """The request of `attempt` of a job whose first attempt asks for `first` (`log`: the job's fvc log,
        which tells a training stopped on the time-limit warning; `memory_log`: its memory log, which holds
        the cgroup peak of an attempt). Attempt 1, and every attempt when disabled (a job's own Snakemake
        process, where the driver already sized it), cost nothing."""
        if attempt == 1 or not self.enabled:
            return self.policy.blind(first, attempt)
        key = (rule, wildcard_string(wildcards), attempt)
        if key not in self._decided:
            self._decided[key] = self._resize(*key, first, log, memory_log)
        return self._decided[key]

    def _resize(
        self,
        rule: str,
        wildcards: str,
        attempt: int,
        first: Request,
        log: str | None,
        memory_log: str | None,
    ) -> Request:
        try:
            previous = previous_attempt(self.workdir, rule, wildcards, self.since, self.sacct)
        except SacctUnavailable as exc:
            self.announce(f"fvc retry: {rule} {wildcards} attempt {attempt}: {exc}; memory x memory_growth")
            return self.policy.blind(first, attempt)
        if previous is not None and previous.state == "FAILED" and log:
            text = fvc_log_text(self.workdir / log, previous.job_id)
            previous = replace(previous, warned=bool(WARNED.search(text)))
        if previous is not None and memory_log:
            previous = previous.with_enforced_peak(self.workdir / memory_log)
        decision = decide(previous, self.policy) if previous is not None else None
        if previous is None or decision is None:
            request = self.policy.blind(first, attempt)
            why = "no previous SLURM job found" if previous is None else f"{previous.state} by signal"
            decision = Decision(request, f"{why}: first request x memory_growth^{attempt - 1}")
        old = previous.request if previous is not None else None
        self._record(rule, wildcards, attempt, previous, old, decision)
        return decision.request

    def _record(
        self,
        rule: str,
        wildcards: str,
        attempt: int,
        previous: Attempt | None,
        old: Request | None,
        d: Decision,
    ) -> None:
        new = d.request
        job = f"job {previous.job_id} {previous.state}" if previous is not None else "no previous job"
        change = (
            f"mem_mb {old.mem_mb} -> {new.mem_mb}, runtime {old.runtime} -> {new.runtime} min"
            if old is not None
            else f"mem_mb {new.mem_mb}, runtime {new.runtime} min"
        )
        self.announce(f"fvc retry: {rule} {wildcards} attempt {attempt}: {job}: {change} ({d.reason})")
        row = {
            "time": datetime.now().isoformat(timespec="seconds"),
            "rule": rule,
            "wildcards": wildcards,
            "attempt": attempt,
            "previous_job": previous.job_id if previous else "",
            "previous_state": previous.state if previous else "",
            "exit_code": previous.exit_code if previous else "",
            "peak_mb": round(previous.peak_mb, 1) if previous and previous.peak_mb is not None else "",
            **{f"old_{k}": v for k, v in (asdict(old) if old else {"mem_mb": "", "runtime": ""}).items()},
            **{f"new_{k}": v for k, v in asdict(new).items()},
            "reason": d.reason,
        }
        self.log_csv.parent.mkdir(parents=True, exist_ok=True)
        new_file = not self.log_csv.exists()
        with self.log_csv.open("a", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=LOG_COLUMNS)
            if new_file:
                writer.writeheader()
            writer.writerow(row)
