"""benchmarks/scale.py: its corpus, its loopback server, its identical-outputs check and a local run end to
end; the SLURM profile's poll setting as Snakemake reads it."""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import scale  # noqa: E402
import slurm_vs_local  # noqa: E402


def test_corpus_is_made_once_served_and_listed_in_a_manifest(tmp_path):
    table = scale.make_corpus(tmp_path / "corpus", videos=6, seed=7, workers=2)
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 6 and {row["label"] for row in rows} == {"real", "fake"}
    first = tmp_path / "corpus" / "files" / rows[0]["video_id"]
    with av.open(str(first)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (64, 48)
        assert sum(1 for _ in container.decode(stream)) == 16
    stamp = first.stat().st_mtime_ns
    assert scale.make_corpus(tmp_path / "corpus", videos=6, seed=7, workers=2) == table
    assert first.stat().st_mtime_ns == stamp  # cached, not made again
    with scale.serve(tmp_path / "corpus" / "files") as url:
        manifest = scale.write_manifest(table, url, tmp_path / "manifest.csv")
        listed = list(csv.DictReader(manifest.open()))
        data = urllib.request.urlopen(listed[0]["url"]).read()
    assert hashlib.sha256(data).hexdigest() == listed[0]["sha256"] == rows[0]["sha256"]


def test_identical_outputs_check_names_the_file_that_differs(tmp_path):
    for run in ("a", "b"):
        for path in scale.merged_outputs(tmp_path / run).values():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("same\n")
    digests = {1: scale.output_digests(tmp_path / "a"), 4: scale.output_digests(tmp_path / "b")}
    assert scale.differing(digests) == []
    scale.merged_outputs(tmp_path / "b")["clips.csv"].write_text("other\n")
    scale.merged_outputs(tmp_path / "b")["folds.csv"].unlink()
    digests[4] = scale.output_digests(tmp_path / "b")
    assert scale.differing(digests) == ["clips.csv", "folds.csv"]


def test_sacct_sizes_in_mb():
    assert [scale.rss_mb(v) for v in ("2048K", "3M", "1.5G", "")] == [2.0, 3.0, 1536.0, 0.0]


def test_local_scale_run_gives_identical_outputs_for_one_and_two_shards(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    args = ["--profile", "profiles/local", "--videos", "12", "--shards", "1", "2"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scale.py"), *args, "--cache", str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "merged outputs across N = 1, 2: identical" in out.stdout
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line[:3].strip() in ("1", "2")}
    assert set(lines) == {"1", "2"}
    for shards in ("1", "2"):  # each sharded stage: its N shard jobs and the merge job
        for stage in ("download", "index", "augment"):
            assert f"{stage} {int(shards) + 1}x max" in lines[shards], lines
        assert "folds 1x max" in lines[shards], lines


def test_jobs_run_reads_rule_and_wildcards_of_finished_jobs():
    log = "\n".join(
        [
            "localrule download:",
            "    jobid: 3",
            "rule train:",
            "    jobid: 7",
            "    wildcards: model=naive_cnn, fold=0",
            "Finished jobid: 7 (Rule: train)",
            "Finished jobid: 3 (Rule: download)",
            "localrule all:",
            "    jobid: 0",
            "Finished jobid: 0 (Rule: all)",
        ]
    )
    assert slurm_vs_local.jobs_run(log) == ["download", "train model=naive_cnn, fold=0"]


def test_a_group_job_is_one_slurm_job_of_its_members():
    log = "\n".join(
        [
            "[Mon Nov 30 00:03:55 2026] Group job data (jobs in lexicogr. order):",
            "    rule augment:",
            "        jobid: 3",
            "    rule index:",
            "        jobid: 4",
            "Job abc78ed0-f4ee has been submitted with SLURM jobid 938 (log: x.log).",
            "rule train:",
            "    jobid: 8",
            "Job 8 has been submitted with SLURM jobid 942 (log: y.log).",
            "[Mon Nov 30 00:05:01 2026]",
            "Finished jobid: 4 (Rule: index)",
            "[Mon Nov 30 00:05:02 2026]",
            "Finished jobid: 3 (Rule: augment)",
        ]
    )
    members = slurm_vs_local.job_members(log)
    assert members == {"938": ["3", "4"], "942": ["8"]}
    finished = slurm_vs_local.finish_times(log, members)
    assert list(finished) == ["938"] and finished["938"].second == 2  # the last member's finish


def test_slurm_profile_poll_setting_is_what_snakemake_reads():
    """The profile's first-status-check key reaches the plugin's setting (a misspelt key would be an unknown
    option, and the plugin's default, 40 s, would be used)."""
    script = (
        "import sys\n"
        "from snakemake.cli import parse_args\n"
        "parser, args = parse_args(sys.argv[1:])\n"
        "print('init_seconds_before_status_checks=%s' % args.slurm_init_seconds_before_status_checks)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, "--profile", "profiles/slurm", "-n"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "init_seconds_before_status_checks=2" in out.stdout.splitlines()
