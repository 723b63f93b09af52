"""Patches of snakemake-executor-plugin-slurm: every cancelled form seen as `CANCELLED`, and a cap on the time
between two status checks.

The plugin (2.8.0, the newest on PyPI) reads each job's state from `sacct -X --format=JobIdRaw,State` and
compares it with exact names (`"CANCELLED"`, `"FAILED"`, ...). sacct writes a job cancelled by a user or an
admin as `CANCELLED by <uid>`, which matches no name: the plugin takes the job for still running and waits on
it forever. The plugin has no setting for this (its `status_command` only picks sacct or squeue, and squeue
forgets a job `MinJobAge` seconds after it ends, which hangs a run the same way), so the workflow wraps the
plugin's status query to keep each state's first word. This is a patch of the plugin's module: it applies to
the versions in `PATCHED_VERSIONS` only (tests/test_slurm_failures.py fails when the installed plugin is
another one, so that the next upgrade re-checks whether it is still needed).

Between two status checks the plugin waits 10 s longer after every check where no job finished, up to 180 s
(neither number is a setting; Snakemake's `--seconds-between-status-checks` is overwritten), so a job of a few
minutes is seen finished a minute or more late and the jobs after it start that much later.
`cap_status_interval` holds the wait at config `slurm.max_status_interval_s`: one `sacct` call for all of a
run's jobs every that many seconds at most."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
from collections.abc import Awaitable, Callable

PLUGIN = "snakemake_executor_plugin_slurm"
PATCHED_VERSIONS = ("2.8.0",)
StatusQuery = Callable[..., Awaitable[tuple[dict[str, str] | None, float | None]]]


def base_state(state: str) -> str:
    """A SLURM job state without sacct's suffix: `CANCELLED by 0` -> `CANCELLED`, `RUNNING` unchanged."""
    return state.split(maxsplit=1)[0] if state.strip() else state


def with_base_states(query: StatusQuery) -> StatusQuery:
    """`query` (the plugin's `query_job_status`) with every returned state reduced to its base state."""

    @functools.wraps(query)
    async def wrapped(*args, **kwargs):
        states, duration = await query(*args, **kwargs)
        if states is not None:
            states = {job_id: base_state(state) for job_id, state in states.items()}
        return states, duration

    wrapped.fvc_base_states = True  # type: ignore[attr-defined]
    return wrapped


def plugin_version() -> str | None:
    """The installed plugin's version, None when it is not installed."""
    try:
        return importlib.metadata.version(PLUGIN.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return None


def _patchable() -> bool:
    """Whether the installed plugin is a version these patches were checked on (warned when not)."""
    version = plugin_version()
    if version is None:
        return False
    if version not in PATCHED_VERSIONS:
        logging.getLogger(__name__).warning(
            "fvc: %s %s is not one fvc checked (%s): jobs cancelled with scancel may not be seen as ended, "
            "and status checks may come up to 180 s apart",
            PLUGIN,
            version,
            ", ".join(PATCHED_VERSIONS),
        )
        return False
    return True


def cap_status_interval(seconds: float) -> bool:
    """Patch the installed plugin (a version of `PATCHED_VERSIONS`) so that its wait between two status
    checks never exceeds `seconds`; returns whether the patch is in place."""
    if not _patchable():
        return False
    executor = importlib.import_module(PLUGIN).Executor
    if "fvc_uncapped_interval" not in vars(executor):  # the plugin's own property, kept for a later cap
        executor.fvc_uncapped_interval = executor.next_seconds_between_status_checks
    interval = executor.fvc_uncapped_interval

    def capped(self, value: float | None) -> None:
        interval.fset(self, None if value is None else min(value, seconds))

    executor.next_seconds_between_status_checks = property(interval.fget, capped)
    return True


def recognise_cancelled_jobs() -> bool:
    """Patch the installed plugin (a version of `PATCHED_VERSIONS`) so that `CANCELLED by <uid>` ends a job;
    returns whether the patch is in place. Idempotent; another version is left alone with a warning."""
    if not _patchable():
        return False
    plugin = importlib.import_module(PLUGIN)
    query = getattr(plugin, "query_job_status")  # noqa: B009 - the plugin has no type stubs
    if not getattr(query, "fvc_base_states", False):
        setattr(plugin, "query_job_status", with_base_states(query))  # noqa: B010
    return True
