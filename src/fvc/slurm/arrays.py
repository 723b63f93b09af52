"""SLURM job arrays of one request each: the plugin's array submission split by the jobs' resources.

snakemake-executor-plugin-slurm (2.8.0) submits the ready jobs of a rule named in `slurm-array-jobs` as one
array whose sbatch options (memory, time limit, partition, GPUs, `slurm_extra`) are the first job's: "all jobs
have the same resource requirement". fvc's train jobs do not: each model's row sizes its jobs, and a retry
asks for more than a first attempt. So the workflow wraps the plugin's array submission to submit one array
per distinct request (a request alone in its group is an array of one task). Like `fvc.slurm.plugin_status`,
this patches the plugin's module for the versions in `PATCHED_VERSIONS` only."""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from fvc.slurm.plugin_status import PATCHED_VERSIONS, PLUGIN, plugin_version


def request_key(job: Any) -> tuple:
    """What sbatch is asked for on the job's behalf: every resource and the threads (cpus-per-task)."""
    resources = sorted((name, repr(value)) for name, value in job.resources.items())
    return (job.threads, tuple(resources))


def by_request(jobs: Iterable[Any]) -> list[list[Any]]:
    """`jobs` grouped by `request_key`, each group in the jobs' order, the groups in order of first job."""
    groups: dict[tuple, list[Any]] = {}
    for job in jobs:
        groups.setdefault(request_key(job), []).append(job)
    return list(groups.values())


def one_request_per_array(submit: Callable[[Any, list[Any]], None]) -> Callable[[Any, list[Any]], None]:
    """`submit` (the executor's `_submit_array_jobs`) called once per group of jobs with the same request."""

    @functools.wraps(submit)
    def wrapped(self: Any, jobs: list[Any]) -> None:
        for group in by_request(jobs):
            submit(self, group)

    wrapped.fvc_one_request = True  # type: ignore[attr-defined]
    return wrapped


def split_arrays_by_request() -> bool:
    """Patch the installed plugin (a version of `PATCHED_VERSIONS`) so that each array holds jobs of one
    request; returns whether the patch is in place. Idempotent; another version is left alone, with a
    warning."""
    version = plugin_version()
    if version is None:
        return False
    if version not in PATCHED_VERSIONS:
        logging.getLogger(__name__).warning(
            "fvc: %s %s is not one fvc checked (%s): an array job may ask for its first task's resources",
            PLUGIN,
            version,
            ", ".join(PATCHED_VERSIONS),
        )
        return False
    executor = importlib.import_module(PLUGIN).Executor
    submit = executor._submit_array_jobs  # noqa: SLF001 - the plugin's one place that forms arrays
    if not getattr(submit, "fvc_one_request", False):
        executor._submit_array_jobs = one_request_per_array(submit)  # noqa: SLF001
    return True
