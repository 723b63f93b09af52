"""Running `sacct` and parsing what it prints: memory units, times, states and per-step records."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from fvc.core.errors import FvcError

log = logging.getLogger(__name__)

#: Trackable resources: AllocTRES (`gres/gpu=1` when the job holds a GPU; every Slurm that accounts GRES)
#: and TRESUsageInMax (`gres/gpumem=...M,gres/gpuutil=NN` where the site gathers GPU usage, e.g. NVML).
TRES_FIELDS = ("AllocTRES", "TRESUsageInMax")
#: Time limit and the job's start and end (epoch-free ISO times, the cluster's local time): time efficiency,
#: and which memory-log records belong to the job.
TIME_FIELDS = ("Timelimit", "Start", "End")
FIELDS = tuple(
    "JobID JobIDRaw JobName State ExitCode ReqMem MaxRSS Elapsed TotalCPU AllocCPUS NNodes NTasks Submit "
    "Timelimit Start End AllocTRES TRESUsageInMax Comment".split()
)
UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
MEMORY_RE = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<unit>[KMGTP]?)(?P<per>[nc]?)")
TIME_RE = re.compile(r"(?:(?P<days>\d+)-)?(?:(?P<h>\d+):)?(?P<m>\d+):(?P<s>\d+(?:\.\d+)?)")
UNREACHABLE = (
    "connection refused",
    "slurmdbd",
    "persistent connection",
    "unable to contact",
    "not running a supported accounting_storage",
)
#: States in order of precedence when steps disagree (an OOM anywhere makes the job OUT_OF_MEMORY).
STATE_ORDER = (
    "OUT_OF_MEMORY",
    "TIMEOUT",
    "NODE_FAIL",
    "FAILED",
    "CANCELLED",
    "PREEMPTED",
    "DEADLINE",
    "BOOT_FAIL",
    "RUNNING",
    "PENDING",
    "REQUEUED",
    "COMPLETED",
)
MB = 1024**2
MAX_IDS_PER_CALL = 400


class SacctUnavailable(FvcError, RuntimeError):
    """sacct is missing or the accounting database cannot be reached."""


def parse_memory(text: str, *, plain_unit: str = "", cpus: int = 1, nodes: int = 1) -> int | None:
    """Bytes in a sacct memory field (`2052K`, `1.50G`, `1000Mn`, `500Mc`, plain numbers in `plain_unit`).

    A per-CPU (`c`) amount is multiplied by `cpus` and a per-node (`n`) one by `nodes`, as older Slurm
    releases print ReqMem. Empty fields and placeholders such as `16?` give None."""
    text = text.strip()
    match = MEMORY_RE.fullmatch(text)
    if match is None:
        return None
    unit = match["unit"] or plain_unit
    value = float(match["value"]) * UNITS[unit]
    if match["per"] == "c":
        value *= cpus
    elif match["per"] == "n":
        value *= nodes
    return round(value)


def parse_tres(text: str) -> dict[str, str]:
    """A TRES list (`billing=2,cpu=2,gres/gpu=1,mem=200M`) as a dict; `gres/gpu:a100=1` also counts as
    `gres/gpu` (summed over types)."""
    tres: dict[str, str] = {}
    for item in text.strip().split(","):
        name, sep, value = item.partition("=")
        if not sep:
            continue
        tres[name] = value
        if name.startswith("gres/gpu:") and value.isdigit():
            tres["gres/gpu"] = str(int(tres.get("gres/gpu", "0")) + int(value))
    return tres


def _percent(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def parse_duration(text: str) -> float | None:
    """Seconds in a sacct time field: `D-HH:MM:SS`, `HH:MM:SS`, `MM:SS`, `MM:SS.mmm`; None if invalid."""
    match = TIME_RE.fullmatch(text.strip())
    if match is None:
        return None
    days, hours = int(match["days"] or 0), int(match["h"] or 0)
    return days * 86400 + hours * 3600 + int(match["m"]) * 60 + float(match["s"])


def parse_state(text: str) -> str:
    """The bare state word: `CANCELLED by 0` -> `CANCELLED`, `OUT_OF_ME+` -> `OUT_OF_MEMORY`."""
    word = text.strip().split(" ")[0].rstrip("+") if text.strip() else "UNKNOWN"
    return next((state for state in STATE_ORDER if state.startswith(word) and len(word) >= 3), word)


def worst_state(states: Iterable[str]) -> str:
    """The state that decides a job's outcome among its steps' states."""
    ranked = [s for s in states if s in STATE_ORDER]
    return min(ranked, key=STATE_ORDER.index) if ranked else "UNKNOWN"


@dataclass
class Step:
    """One line of sacct output: the allocation (`step == ""`), `batch`, `extern` or a numbered step."""

    job_id: str
    step: str
    name: str
    state: str
    exit_code: str
    req_mem: int | None
    max_rss: int | None
    elapsed_s: float | None
    total_cpu_s: float | None
    alloc_cpus: int
    nodes: int
    submit: str
    comment: str
    time_limit_s: float | None = None  # Timelimit (UNLIMITED: None)
    start: str = ""
    end: str = ""
    gpus: int = 0
    tasks: int = 1  # NTasks: MaxRSS is the largest task's, so the step's peak is up to MaxRSS x tasks
    gpu_mem: int | None = None
    gpu_util: float | None = None

    @property
    def placeholder(self) -> bool:
        """A record sacct shows for about a second after a job ends, before the real one is stored."""
        return self.step == "" and (self.name == "allocation" or self.req_mem is None)


@dataclass
class Job:
    """A SLURM job's allocation line and its steps."""

    job_id: str
    steps: list[Step] = field(default_factory=list)

    @property
    def allocation(self) -> Step | None:
        return next((s for s in self.steps if s.step == ""), None)

    @property
    def state(self) -> str:
        """OUT_OF_MEMORY if any step ran out of memory, otherwise the allocation's state."""
        states = [s.state for s in self.steps]
        if "OUT_OF_MEMORY" in states:
            return "OUT_OF_MEMORY"
        alloc = self.allocation
        return alloc.state if alloc is not None else worst_state(states)

    @property
    def req_mem(self) -> int | None:
        alloc = self.allocation
        return alloc.req_mem if alloc is not None else None

    @property
    def max_rss(self) -> int | None:
        """Peak memory: the largest MaxRSS x tasks over every step (sacct's MaxRSS is a step's largest task,
        as reportseff counts it; the allocation line has none)."""
        values = [s.max_rss * s.tasks for s in self.steps if s.max_rss is not None]
        return max(values) if values else None

    @property
    def gpus(self) -> int:
        """GPUs the job held (AllocTRES gres/gpu of its allocation line)."""
        alloc = self.allocation
        return alloc.gpus if alloc is not None else 0

    @property
    def gpu_mem(self) -> int | None:
        """Peak GPU memory over the steps (gres/gpumem), where the site gathers it."""
        values = [s.gpu_mem for s in self.steps if s.gpu_mem is not None]
        return max(values) if values else None

    @property
    def gpu_util(self) -> float | None:
        """Highest GPU utilisation (%) over the steps (gres/gpuutil), where the site gathers it."""
        values = [s.gpu_util for s in self.steps if s.gpu_util is not None]
        return max(values) if values else None

    @property
    def placeholder(self) -> bool:
        alloc = self.allocation
        return alloc is None or alloc.placeholder


def parse_sacct(text: str, fields: Sequence[str] = FIELDS) -> dict[str, Job]:
    """Jobs keyed by job id from `sacct --parsable2 [--noheader] --format=<fields>` output.

    A header line (if present) is skipped; the last field may itself contain `|` (job comments)."""
    jobs: dict[str, Job] = {}
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and lines[0].split("|")[0] == fields[0]:
        lines = lines[1:]
    for number, line in enumerate(lines, 1):
        values = line.split("|", len(fields) - 1)
        if len(values) != len(fields):
            raise ValueError(
                f"sacct output line {number}: {len(values)} fields, expected {len(fields)}: {line!r}"
            )
        row = dict(zip(fields, values, strict=True))
        job_id, _, step = row["JobID"].partition(".")
        cpus = int(row.get("AllocCPUS") or 1) or 1
        nodes = int(row.get("NNodes") or 1) or 1
        alloc_tres, usage = parse_tres(row.get("AllocTRES", "")), parse_tres(row.get("TRESUsageInMax", ""))
        record = Step(
            job_id=job_id,
            step=step,
            name=row.get("JobName", ""),
            state=parse_state(row.get("State", "")),
            exit_code=row.get("ExitCode", ""),
            req_mem=parse_memory(row.get("ReqMem", ""), plain_unit="M", cpus=cpus, nodes=nodes),
            max_rss=parse_memory(row.get("MaxRSS", "")),
            tasks=int(row.get("NTasks") or 1),
            elapsed_s=parse_duration(row.get("Elapsed", "")),
            total_cpu_s=parse_duration(row.get("TotalCPU", "")),
            alloc_cpus=cpus,
            nodes=nodes,
            submit=row.get("Submit", ""),
            comment=row.get("Comment", ""),
            time_limit_s=parse_duration(row.get("Timelimit", "")),
            start=row.get("Start", ""),
            end=row.get("End", ""),
            gpus=int(alloc_tres.get("gres/gpu", "0") or 0),
            gpu_mem=parse_memory(usage.get("gres/gpumem", "")),
            gpu_util=_percent(usage.get("gres/gpuutil")),
        )
        jobs.setdefault(job_id, Job(job_id)).steps.append(record)
    return jobs


Runner = Callable[[list[str]], subprocess.CompletedProcess]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def sacct_command(job_ids: Sequence[str], fields: Sequence[str] = FIELDS) -> list[str]:
    """The sacct call for these jobs: every step, one parsable line each, explicit fields."""
    return ["sacct", "--parsable2", "--noheader", f"--format={','.join(fields)}", "-j", ",".join(job_ids)]


def query(job_ids: Sequence[str], runner: Runner = _run, fields: Sequence[str] = FIELDS) -> str:
    """Raw sacct output for `job_ids`; raises SacctUnavailable with sacct's own message when it fails."""
    if runner is _run and shutil.which("sacct") is None:
        raise SacctUnavailable("sacct: command not found (no SLURM client on this machine)")
    try:
        done = runner(sacct_command(job_ids, fields))
    except (OSError, subprocess.SubprocessError) as exc:
        raise SacctUnavailable(f"sacct could not run: {exc}") from exc
    stderr = (done.stderr or "").strip()
    if done.returncode != 0:
        raise SacctUnavailable(f"sacct exited with {done.returncode}: {stderr or '(no message)'}")
    if not done.stdout.strip() and any(key in stderr.lower() for key in UNREACHABLE):
        raise SacctUnavailable(f"sacct cannot reach the accounting database: {stderr}")
    return done.stdout


def read_sacct(
    job_ids: Iterable[str], runner: Runner = _run, settle_s: float = 2.0, fields: Sequence[str] = FIELDS
) -> dict[str, Job]:
    """Every step of `job_ids` in as few sacct calls as possible (chunks of 400 ids).

    Jobs that ended a moment ago can show a placeholder allocation line; those are asked once more
    after `settle_s` seconds."""
    ids = sorted(set(job_ids), key=_id_key)
    jobs: dict[str, Job] = {}
    for start in range(0, len(ids), MAX_IDS_PER_CALL):
        jobs.update(parse_sacct(query(ids[start : start + MAX_IDS_PER_CALL], runner, fields), fields))
    unsettled = [job_id for job_id, job in jobs.items() if job.placeholder]
    if unsettled and settle_s > 0:
        log.info("sacct shows placeholder records for %s; asking again in %.0f s", unsettled, settle_s)
        time.sleep(settle_s)
        jobs.update(parse_sacct(query(unsettled, runner, fields), fields))
    return jobs


def _id_key(job_id: str) -> tuple[int, ...]:
    """Numeric order of `123`, `123_4` ids."""
    return tuple(int(part) for part in re.findall(r"\d+", job_id))
