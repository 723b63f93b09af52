"""sacct parsing on outputs recorded on the test cluster (fixtures/sacct/record.sh) and hand-made ones."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fvc.slurm.sacct import (
    FIELDS,
    MB,
    TIME_FIELDS,
    TRES_FIELDS,
    SacctUnavailable,
    parse_duration,
    parse_memory,
    parse_sacct,
    parse_state,
    query,
    read_sacct,
    sacct_command,
)

FIXTURES = Path(__file__).parent / "fixtures" / "sacct"
#: The fields of the fixtures recorded before fvc asked sacct for the TRES columns.
PRE_GPU_FIELDS = tuple(f for f in FIELDS if f not in TRES_FIELDS + TIME_FIELDS)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.mark.parametrize(
    ("text", "kwargs", "expected"),
    [
        ("10740K", {}, 10740 * 1024),
        ("1.50G", {}, int(1.5 * 1024**3)),
        ("400M", {}, 400 * MB),
        ("1T", {}, 1024**4),
        ("524288000", {}, 524288000),  # plain bytes
        ("0", {}, 0),
        ("2000Mn", {"nodes": 2}, 4000 * MB),  # per node, older releases
        ("500Mc", {"cpus": 4}, 2000 * MB),  # per CPU, older releases
        ("1000", {"plain_unit": "M"}, 1000 * MB),
        ("", {}, None),
        ("16?", {}, None),  # placeholder ReqMem just after a job ends
    ],
)
def test_parse_memory(text, kwargs, expected):
    assert parse_memory(text, **kwargs) == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:00:03", 3.0),
        ("05:07", 307.0),
        ("12:34.567", 754.567),
        ("00:00.326", 0.326),
        ("1-02:03:04", 93784.0),
        ("2-04:06:08", 187568.0),
        ("", None),
        ("INVALID", None),
    ],
)
def test_parse_duration(text, seconds):
    assert (
        parse_duration(text) == pytest.approx(seconds)
        if seconds is not None
        else parse_duration(text) is None
    )


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("CANCELLED by 0", "CANCELLED"),
        ("CANCELLED by 1000", "CANCELLED"),
        ("OUT_OF_ME+", "OUT_OF_MEMORY"),
        ("OUT_OF_MEMORY", "OUT_OF_MEMORY"),
        ("TIMEOUT", "TIMEOUT"),
        ("COMPLETED", "COMPLETED"),
        ("", "UNKNOWN"),
    ],
)
def test_parse_state(text, state):
    assert parse_state(text) == state


def test_recorded_jobs_states_and_peaks():
    """Real cluster output: an OOM only in step .0 (allocation COMPLETED), a failure, a stepless cancel."""
    ok, oom, failed, cancelled = fixture("job_ids.txt").split()
    jobs = parse_sacct(fixture("jobs.txt"), PRE_GPU_FIELDS)
    assert set(jobs) == {ok, oom, failed, cancelled}
    assert jobs[ok].state == "COMPLETED"
    assert jobs[ok].allocation.max_rss is None  # MaxRSS is empty on the allocation line ...
    assert jobs[ok].max_rss == 167016 * 1024  # ... and the peak comes from step .0
    assert jobs[ok].req_mem == 400 * MB
    assert jobs[oom].allocation.state == "COMPLETED" and jobs[oom].state == "OUT_OF_MEMORY"
    assert jobs[failed].state == "FAILED"
    assert jobs[cancelled].state == "CANCELLED" and jobs[cancelled].max_rss is None
    assert not any(job.placeholder for job in jobs.values())


def test_header_is_skipped():
    assert (
        parse_sacct(fixture("jobs_header.txt"), PRE_GPU_FIELDS).keys()
        == parse_sacct(fixture("jobs.txt"), PRE_GPU_FIELDS).keys()
    )


def test_placeholder_is_detected_and_asked_again():
    calls = []

    def runner(args):
        calls.append(args)
        text = fixture("placeholder.txt") if len(calls) == 1 else fixture("settled.txt")
        return subprocess.CompletedProcess(args, 0, text, "")

    first = parse_sacct(fixture("placeholder.txt"), PRE_GPU_FIELDS)
    assert all(job.placeholder for job in first.values())
    jobs = read_sacct(["5"], runner=runner, settle_s=0.01, fields=PRE_GPU_FIELDS)
    assert len(calls) == 2
    (job,) = jobs.values()
    assert not job.placeholder and job.state == "COMPLETED" and job.req_mem == 300 * MB


def test_old_release_formats():
    jobs = parse_sacct(fixture("old_release.txt"), PRE_GPU_FIELDS)
    assert jobs["101"].req_mem == 2000 * MB and jobs["101"].max_rss == int(1.5 * 1024**3)
    assert jobs["101"].allocation.comment == "rule_train_wildcards_vit_gru_2"
    assert jobs["102"].req_mem == 2000 * MB  # 500Mc x 4 CPUs
    assert jobs["102"].state == "TIMEOUT"
    assert jobs["103"].allocation.state == "FAILED" and jobs["103"].state == "OUT_OF_MEMORY"
    assert jobs["104"].state == "CANCELLED" and jobs["104"].allocation.elapsed_s is None
    assert jobs["105_1"].max_rss == 409600 * 1024  # array task: keyed by JobID, not JobIDRaw


def test_command_is_one_call_with_explicit_format():
    args = sacct_command(["3", "1", "2"])
    assert args[:3] == ["sacct", "--parsable2", "--noheader"]
    assert f"--format={','.join(FIELDS)}" in args and args[-2:] == ["-j", "3,1,2"]


@pytest.mark.parametrize(
    ("rc", "stdout", "stderr", "match"),
    [
        (1, "", fixture("unreachable.txt"), "Connection refused"),
        (0, "", fixture("unreachable.txt"), "accounting database"),
        (1, "", "", "exited with 1"),
    ],
)
def test_unreachable_accounting_raises_clear_error(rc, stdout, stderr, match):
    with pytest.raises(SacctUnavailable, match=match):
        query(["1"], runner=lambda args: subprocess.CompletedProcess(args, rc, stdout, stderr))


def test_missing_command():
    def runner(args):
        raise FileNotFoundError(2, "No such file or directory", "sacct")

    with pytest.raises(SacctUnavailable, match="could not run"):
        query(["1"], runner=runner)


def test_bad_line_names_the_line():
    with pytest.raises(ValueError, match="line 1"):
        parse_sacct("1|2|3\n")


def test_time_limit_start_and_end():
    """Recorded with the current fields: Timelimit in seconds, Start and End as sacct prints them."""
    jobs = parse_sacct(fixture("time_fields.txt"))
    done, timeout = jobs["649"].allocation, jobs["650"].allocation
    assert (done.time_limit_s, done.elapsed_s, done.alloc_cpus) == (60, 5, 2)
    assert (done.start, done.end) == ("2026-11-29T20:23:27", "2026-11-29T20:23:32")
    assert jobs["650"].state == "TIMEOUT" and timeout.elapsed_s == 62
    assert jobs["649"].steps[1].time_limit_s is None  # steps carry no limit
