"""The audit's peak of a job step of several tasks: sacct's MaxRSS is the largest task's, so the peak is
MaxRSS x NTasks (reportseff's count)."""

from __future__ import annotations

from fvc.slurm.sacct import FIELDS, parse_sacct


def row(**values: str) -> str:
    return "|".join(values.get(field, "") for field in FIELDS)


def test_a_two_task_step_peaks_at_twice_its_largest_task():
    text = "\n".join(
        [
            row(JobID="7", JobIDRaw="7", JobName="train", State="COMPLETED", ReqMem="3000M", NTasks=""),
            row(JobID="7.0", JobIDRaw="7.0", JobName="bash", State="COMPLETED", MaxRSS="300M", NTasks="1"),
            row(JobID="7.1", JobIDRaw="7.1", JobName="python", State="COMPLETED", MaxRSS="200M", NTasks="2"),
        ]
    )
    job = parse_sacct(text)["7"]
    assert job.max_rss == 400 * 1024**2
