"""Audit: job discovery from the plugin's files, rows from recorded sacct output, right-sizing, --apply."""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from workflow_runner import copy_workflow, snakemake

from fvc.cli import main
from fvc.core.config import load_config, validate_config
from fvc.core.errors import FvcError
from fvc.core.schema import defaults
from fvc.infer.preflight import MB, preflight
from fvc.slurm.audit import audit_workflow
from fvc.slurm.jobs import JobRef, discover_jobs, split_wildcards
from fvc.slurm.recommend import Recommendation, apply_recommendations, edit_config_text, recommend, snippet
from fvc.slurm.render import render_table
from fvc.slurm.rows import add_memory_logs, benchmark_rows, sacct_rows
from fvc.slurm.runs import record_run
from fvc.slurm.sacct import FIELDS, TIME_FIELDS, TRES_FIELDS, SacctUnavailable, parse_sacct

ROOT = Path(__file__).resolve().parents[1]
SAFETY = defaults()["audit"]["safety_factor"]
FIXTURES = ROOT / "tests" / "fixtures" / "sacct"
#: The fields of the fixtures recorded before fvc asked sacct for the TRES columns.
PRE_GPU_FIELDS = tuple(f for f in FIELDS if f not in TRES_FIELDS + TIME_FIELDS)
RECORDED_CONFIG = FIXTURES / "config.yaml"  # the numbers the recorded jobs asked for
BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def make_workdir(tmp_path: Path) -> Path:
    """A workflow dir as the SLURM plugin leaves it after the recorded jobs 1-4 (tests/fixtures/sacct)."""
    work = tmp_path / "wf"
    (work / ".snakemake" / "log").mkdir(parents=True)
    shutil.copy(RECORDED_CONFIG, work / "config.yaml")
    logs = work / ".snakemake" / "slurm_logs"
    # Successful jobs' logs are deleted by the plugin; the run's snakemake log still names them.
    (work / ".snakemake" / "log" / "2026-11-22T110443.snakemake.log").write_text(
        "rule train:\n    jobid: 3\n"
        f"Job 3 has been submitted with SLURM jobid 1 (log: {logs}/rule_train/naive_cnn_0/1.log).\n"
        f"Job 4 has been submitted with SLURM jobid 2 (log: {logs}/rule_train/naive_cnn_1/2.log).\n"
    )
    # Failed jobs keep their log file (a run whose snakemake log is gone).
    for rel in ("rule_infer/naive_cnn/3.log", "rule_augment/4.log", "rule_train/naive_cnn_1/2.log"):
        (logs / rel).parent.mkdir(parents=True, exist_ok=True)
        (logs / rel).write_text("slurm log\n")
    return work


def recorded_sacct(calls: list):
    def sacct(ids):
        calls.append(list(ids))
        return parse_sacct((FIXTURES / "jobs.txt").read_text(), PRE_GPU_FIELDS)

    return sacct


def test_discover_jobs_from_logs_and_slurm_logs(tmp_path):
    refs = discover_jobs(make_workdir(tmp_path))
    assert refs == {
        "1": JobRef("1", "train", "naive_cnn_0"),
        "2": JobRef("2", "train", "naive_cnn_1"),
        "3": JobRef("3", "infer", "naive_cnn"),
        "4": JobRef("4", "augment", ""),
    }


@pytest.mark.parametrize(
    ("rule", "wildcards", "expected"),
    [
        ("train", "naive_cnn_0", ("naive_cnn", 0)),
        ("train", "vit_gru_12", ("vit_gru", 12)),
        ("infer", "logistic_regression", ("logistic_regression", None)),
        ("folds", "", (None, None)),
    ],
)
def test_split_wildcards(rule, wildcards, expected):
    assert split_wildcards(wildcards) == expected


def test_audit_rows_on_recorded_jobs(tmp_path):
    work, calls = make_workdir(tmp_path), []
    result = audit_workflow(
        work, tmp_path / "a.csv", tmp_path / "a.parquet", safety_factor=SAFETY, sacct=recorded_sacct(calls)
    )
    assert len(calls) == 1 and sorted(calls[0]) == ["1", "2", "3", "4"]  # one sacct call for all jobs
    rows = {r["job_id"]: r for r in result.rows}
    assert result.source == "sacct"
    assert rows["1"]["state"] == "COMPLETED" and rows["1"]["peak_mem_mb"] == pytest.approx(163.1)
    assert rows["1"]["mem_eff"] == pytest.approx(40.8)  # reportseff's MemEff for this job: 40.8
    assert rows["1"]["cpu_eff"] == pytest.approx(10.9) and rows["1"]["flag"] == "<60% used"
    assert rows["2"]["state"] == "OUT_OF_MEMORY" and rows["2"]["flag"] == "OOM"  # allocation said COMPLETED
    assert (rows["2"]["model"], rows["2"]["fold"]) == ("naive_cnn", 1)
    assert rows["3"]["state"] == "FAILED" and rows["4"]["state"] == "CANCELLED"
    assert rows["1"]["run"] == "6d1f5c0e-7a1b-4c2e-9a49-recorded0001"
    import polars as pl

    table = pl.read_parquet(tmp_path / "a.parquet")
    assert table.height == 4 and pl.read_csv(tmp_path / "a.csv").columns == table.columns
    text = render_table(result.rows, result.recommendations)
    assert "OOM" in text and "models.naive_cnn.mem_mb: 1500 -> 300" in text


def test_attempts_comment_and_old_formats():
    """Attempts are numbered per rule+wildcards in submission order; the job comment names the rule."""
    jobs = parse_sacct((FIXTURES / "old_release.txt").read_text(), PRE_GPU_FIELDS)
    refs = {j: JobRef(j, "?", "") for j in jobs}
    jobs["107"] = parse_sacct(
        (FIXTURES / "old_release.txt").read_text().replace("101", "107"), PRE_GPU_FIELDS
    )["107"]
    refs["107"] = JobRef("107", "?", "")
    rows = {r["job_id"]: r for r in sacct_rows(refs, jobs)}
    assert (rows["101"]["rule"], rows["101"]["model"], rows["101"]["fold"]) == ("train", "vit_gru", 2)
    assert rows["101"]["attempt"] == 1 and rows["107"]["attempt"] == 2
    assert rows["101"]["cpu_eff"] == pytest.approx(100.0)  # TotalCPU 2-04:06:08 over 2 CPUs x 1-02:03:04
    assert rows["102"]["state"] == "TIMEOUT" and rows["102"]["mem_eff"] == pytest.approx(90.0)
    assert rows["103"]["state"] == "OUT_OF_MEMORY" and rows["103"]["flag"] == "OOM"
    assert rows["104"]["state"] == "CANCELLED" and rows["104"]["elapsed_s"] is None
    assert rows["105_1"]["flag"] == "<60% used"


def test_recommend_and_snippet():
    config = load_config(RECORDED_CONFIG)
    jobs = parse_sacct((FIXTURES / "old_release.txt").read_text(), PRE_GPU_FIELDS)
    rows = sacct_rows({j: JobRef(j, "?", "") for j in jobs}, jobs)
    recs = {(r.table, r.row, r.key): r for r in recommend(rows, config, safety_factor=1.2)}
    vit = recs[("models", "vit_gru", "mem_mb")]  # peak 1536 MB x 1.2 = 1843 -> 1900
    assert (vit.current, vit.recommended, vit.action) == (2500, 1900, "lower")
    x3d = recs[("models", "x3d", "infer_mem_mb")]  # only ran out of memory at 3072 MB: x memory_growth 1.5
    assert (x3d.recommended, x3d.action) == (4700, "raise-oom")
    lr = recs[("models", "logistic_regression", "mem_mb")]  # peak 400 MB -> 480 -> 500
    assert lr.recommended == 500
    assert ("resources", "augment", "mem_mb") not in recs  # a TIMEOUT says nothing about memory
    assert ("resources", "folds", "mem_mb") not in recs  # cancelled before it ran
    assert ("resources", "augment", "runtime") not in recs  # timed out, but the old format has no Timelimit
    shaped = yaml.safe_load(snippet(recs.values()))
    assert shaped == {
        "models": {
            # runtime: 1 min x 2 -> the 5 min floor; cpus: 30 s of CPU in 60 s -> 0.5 x 1.2 -> 1
            "logistic_regression": {"mem_mb": 500, "runtime": 5, "cpus": 1},
            # runtime: 1-02:03:04 x 2 = 3126.1 min -> 3127; cpus: both CPUs busy all along -> 2 (as asked)
            "vit_gru": {"mem_mb": 1900, "runtime": 3127, "cpus": 2},
            "x3d": {"infer_mem_mb": 4700},
        }
    }


def test_apply_edits_numbers_in_place(tmp_path):
    config_path = tmp_path / "config.yaml"
    shutil.copy(RECORDED_CONFIG, config_path)
    before = config_path.read_text()
    config = load_config(config_path)
    jobs = parse_sacct((FIXTURES / "old_release.txt").read_text(), PRE_GPU_FIELDS)
    recs = recommend(sacct_rows({j: JobRef(j, "?", "") for j in jobs}, jobs), config)
    diff = apply_recommendations(config_path, recs, today=datetime.date(2026, 11, 29))
    after = config_path.read_text()
    assert "-     mem_mb: 2500, runtime: 60, infer_mem_mb: 1500, num_workers: 0, params: {}}" in diff
    assert (
        "+     mem_mb: 1900, runtime: 3127, infer_mem_mb: 1500, num_workers: 0, params: {}}  "
        "# audit 2026-11-29: mem_mb peak 1536 MB (MaxRSS), runtime max elapsed 26.1 h" in diff
    )
    assert "+     mem_mb: 2000, runtime: 60, infer_mem_mb: 4700," in diff  # x3d
    assert "infer_mem_mb out of memory at 3072 MB" in diff
    new = load_config(config_path)
    assert new["models"]["vit_gru"]["mem_mb"] == 1900 and new["models"]["x3d"]["infer_mem_mb"] == 4700
    assert new["models"]["vit_gru"]["cpus"] == 2 and new["models"]["vit_gru"]["runtime"] == 3127
    assert new["models"]["vit_transformer"] == config["models"]["vit_transformer"]
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert len(before.splitlines()) == len(after.splitlines()) and len(changed) == 5  # 3 rows: 2 lines each
    assert all("# audit 2026-11-29: " in b for _, b in changed if "mem_mb" in b)
    assert apply_recommendations(config_path, recs) == ""  # idempotent


def test_apply_replaces_the_previous_audit_note_and_keeps_other_comments():
    note = "# small; audit 2026-01-02: mem_mb peak 700 MB (MaxRSS)"
    text = f"resources:\n  folds: {{mem_mb: 800, runtime: 10}}  {note}\n"
    recs = [
        Recommendation("resources", "folds", "mem_mb", 800, 400, "lower", "", "peak 300 MB (cgroup)"),
        Recommendation("resources", "folds", "runtime", 10, 5, "lower", "", "max elapsed 0:12"),
    ]
    assert edit_config_text(text, recs, today=datetime.date(2026, 11, 29)) == (
        "resources:\n  folds: {mem_mb: 400, runtime: 5}  "
        "# small; audit 2026-11-29: mem_mb peak 300 MB (cgroup), runtime max elapsed 0:12\n"
    )


def test_edit_refuses_unknown_rows():
    with pytest.raises(ValueError, match="no row `nope`"):
        edit_config_text(
            (RECORDED_CONFIG).read_text(),
            [Recommendation("models", "nope", "mem_mb", 1, 2, "raise", "")],
        )


def write_benchmarks(work: Path) -> None:
    for rel, rss in (
        ("train/naive_cnn/fold0.tsv", 612.5),
        ("infer/naive_cnn.tsv", 200.0),
        ("folds/folds.tsv", 90),
    ):
        path = work / "logs" / "benchmarks" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(BENCH_HEADER + f"12.5\t0:00:12\t{rss}\t900\t{rss - 10}\t{rss}\t1\t2\t50\t6.25\n")


def test_fallback_to_benchmarks_when_sacct_is_unreachable(tmp_path):
    work = make_workdir(tmp_path)
    write_benchmarks(work)

    def down(ids):
        raise SacctUnavailable("sacct cannot reach the accounting database: ... Connection refused")

    result = audit_workflow(work, tmp_path / "a.csv", safety_factor=SAFETY, sacct=down)
    assert result.source == "benchmark" and "Connection refused" in result.message
    rows = {(r["rule"], r["wildcards"]): r for r in result.rows}
    train = rows[("train", "naive_cnn_0")]
    assert train["peak_mem_mb"] == pytest.approx(912.5) and train["req_mem_mb"] == 1500  # + 300 MB overhead
    assert train["cpu_eff"] == pytest.approx(50.0) and rows[("folds", "")]["peak_mem_mb"] == 390
    recs = {(r.table, r.row, r.key): r.recommended for r in result.recommendations}
    assert recs == {
        ("models", "naive_cnn", "mem_mb"): 1100,
        ("models", "naive_cnn", "infer_mem_mb"): 600,
        ("resources", "folds", "mem_mb"): 500,
        ("models", "naive_cnn", "runtime"): 5,  # 12.5 s x 2: the 5-minute floor
        ("resources", "folds", "runtime"): 5,
    }


def test_benchmark_files_without_numbers(tmp_path, caplog):
    """A benchmark whose max_rss is NA is skipped with a warning; one without cpu_time has no CPU use."""
    root = tmp_path / "logs" / "benchmarks"
    for rel, line in (("folds/folds.tsv", "3.0\t0:00:03\tNA\tNA\tNA\tNA\t-\t-\t-\t-"),
                      ("index/index.tsv", "4.0\t0:00:04\t50\t60\t40\t45\t-\t-\t-\t-")):  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(BENCH_HEADER + line + "\n")
    with caplog.at_level(logging.WARNING, logger="fvc.slurm.rows"):
        rows = benchmark_rows(tmp_path, load_config(RECORDED_CONFIG))
    assert "folds.tsv: no max_rss value; skipped" in caplog.text
    assert [(r["rule"], r["peak_mem_mb"], r["elapsed_s"], r["cpu_eff"]) for r in rows] == [
        ("index", 350.0, 4.0, None)
    ]


def test_cli_apply_with_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    work = tmp_path / "wf"
    work.mkdir()
    shutil.copy(RECORDED_CONFIG, work / "config.yaml")
    write_benchmarks(work)
    assert main(["audit", "--workdir", str(work), "--apply"]) == 0
    out = capsys.readouterr().out
    today = datetime.date.today().isoformat()
    note = f"# audit {today}: mem_mb peak 390 MB (benchmark), runtime max elapsed 0:12"
    assert "folds" in out and f"+  folds: {{mem_mb: 500, runtime: 5}}  {note}" in out
    assert (work / "results" / "audit" / "audit.svg").read_text().lstrip().startswith("<?xml")
    assert yaml.safe_load((work / "results" / "audit" / "recommended.yaml").read_text())["resources"] == {
        "folds": {"mem_mb": 500, "runtime": 5}
    }
    assert load_config(work / "config.yaml")["resources"]["folds"]["mem_mb"] == 500


def test_recommendation_stays_above_any_out_of_memory_request():
    config = load_config(RECORDED_CONFIG)
    rows = [
        {
            "job_id": "1",
            "rule": "train",
            "model": "svm",
            "state": "COMPLETED",
            "req_mem_mb": 1200.0,
            "peak_mem_mb": 500.0,
        },
        {
            "job_id": "2",
            "rule": "train",
            "model": "svm",
            "state": "OUT_OF_MEMORY",
            "req_mem_mb": 1200.0,
            "peak_mem_mb": 2.0,
        },
    ]
    (rec,) = recommend(rows, config)
    assert (rec.recommended, rec.action) == (1800, "raise")  # not 600: fold 2 needed more than 1200 MB


def with_overhead(mb: int) -> dict:
    """The recorded config with `resources.snakemake_overhead_mb` set to `mb`."""
    config = yaml.safe_load(RECORDED_CONFIG.read_text())
    config["resources"]["snakemake_overhead_mb"] = mb
    return validate_config(config)


def sacct_down(ids):
    raise SacctUnavailable("sacct cannot reach the accounting database")


def test_the_snakemake_overhead_key_sizes_the_audit(tmp_path):
    """`resources.snakemake_overhead_mb` (default 300, from the schema) is added to benchmark peaks and is
    the floor of every recommendation."""
    assert load_config(RECORDED_CONFIG)["resources"]["snakemake_overhead_mb"] == 300
    work = make_workdir(tmp_path)
    write_benchmarks(work)
    recommended = {}
    for mb in (300, 500):
        result = audit_workflow(
            work, tmp_path / "a.csv", safety_factor=SAFETY, sacct=sacct_down, config=with_overhead(mb)
        )
        assert f"max_rss + {mb} MB" in result.message
        train = next(r for r in result.rows if r["rule"] == "train")
        assert train["peak_mem_mb"] == pytest.approx(612.5 + mb)
        recommended[mb] = {(r.row, r.key): r.recommended for r in result.recommendations if "mem" in r.key}
    # train: 912.5 x 1.2 -> 1100, 1112.5 x 1.2 -> 1400; infer: 500 x 1.2 -> 600, 700 x 1.2 -> 900;
    # folds: 390 x 1.2 -> 500, 590 x 1.2 -> 800.
    assert recommended[300] == {
        ("naive_cnn", "mem_mb"): 1100,
        ("naive_cnn", "infer_mem_mb"): 600,
        ("folds", "mem_mb"): 500,
    }
    assert recommended[500] == {
        ("naive_cnn", "mem_mb"): 1400,
        ("naive_cnn", "infer_mem_mb"): 900,
        ("folds", "mem_mb"): 800,
    }
    tiny = [{"job_id": "1", "rule": "folds", "model": None, "state": "COMPLETED", "req_mem_mb": 800.0,
             "peak_mem_mb": 10.0}]  # fmt: skip
    assert [r.recommended for r in recommend(tiny, with_overhead(300))] == [300]
    assert [r.recommended for r in recommend(tiny, with_overhead(1000))] == [1000]


def test_the_snakemake_overhead_key_is_left_out_of_the_infer_preflight(tmp_path, monkeypatch, caplog):
    """The infer rule passes the key as `reserved_mb`; the pre-flight allowance shrinks by it."""
    override = tmp_path / "overhead.yaml"
    override.write_text("resources:\n  snakemake_overhead_mb: 777\n")
    work = copy_workflow(tmp_path / "wf", override)
    (work / "probe.smk").write_text(
        'include: "Snakefile"\n\n\nprint("reserved_mb=" + str(rules.infer.params.settings["reserved_mb"]))\n'
    )
    parsed = snakemake(work, "--snakefile", "probe.smk", "--list-rules", timeout=120)
    assert parsed.returncode == 0, parsed.stderr[-2000:]
    assert "reserved_mb=777" in parsed.stdout.splitlines()

    weights = tmp_path / "fold0.safetensors"
    save_file({"w": torch.zeros(16)}, weights)
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "100000")  # a fixed allowance (or the cgroup's, if lower)

    def allowance_mb(reserved_mb: int) -> int:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="fvc.infer.preflight"):
            preflight([weights], "naive_cnn", 1, 1, 8, reserved_bytes=reserved_mb * MB)
        assert f"minus {reserved_mb} MB reserved" in caplog.text
        return int(re.search(r"may use (\d+) MB", caplog.text)[1])

    default = load_config(ROOT / "config.yaml")["resources"]["snakemake_overhead_mb"]
    assert allowance_mb(default) - allowance_mb(777) == 777 - default


SLURM_SNAKEFILE = """
configfile: "config.yaml"


def mem(name):
    return lambda wildcards: config["resources"][name]["mem_mb"]


rule all:
    input:
        "out/index.txt",
        "out/folds.txt",


rule index:
    output:
        "out/index.txt",
    resources:
        mem_mb=mem("index"),
        runtime=5,
    shell:
        "python3 -c 'import time; b = b\\"x\\" * (700 * 2**20); time.sleep(3)' && touch {output}"


rule folds:
    output:
        "out/folds.txt",
    resources:
        mem_mb=mem("folds"),
        runtime=5,
    shell:
        "python3 -c 'import time; b = b\\"x\\" * (100 * 2**20); time.sleep(3)' && touch {output}"
"""


def run_on_slurm(work: Path) -> subprocess.CompletedProcess:
    """The project's SLURM profile, without retries (each run is one attempt per job)."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    args = [bin_dir / "snakemake", "--profile", ROOT / "profiles" / "slurm", "--retries", "0", "--forceall",
            "--jobs", "2", "--latency-wait", "5"]  # fmt: skip
    return subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=600)


def reportseff_effs(job_ids: list[str]) -> dict[str, dict[str, float | None]]:
    """reportseff's MemEff, TimeEff and CPUEff (None for its `---`) per job."""
    exe = Path(sys.executable).parent / "reportseff"
    out = subprocess.run(
        [exe, "--no-color", "--parsable", "--format", "JobID,MemEff,TimeEff,CPUEff", *job_ids],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    effs = {}
    for line in out.splitlines()[1:]:
        if line:
            job_id, *values = line.split("|")
            effs[job_id] = {
                key: None if value == "---" else float(value)
                for key, value in zip(("mem", "time", "cpu"), values, strict=True)
            }
    return effs


@pytest.mark.slurm
@pytest.mark.slow
def test_audit_apply_rerun_on_cluster(slurm_cluster, tmp_path):
    """Real jobs through the SLURM plugin: one runs out of memory, one asks far too much; the audit flags
    both, --apply right-sizes config.yaml, and on the rerun every job's peak is 60-90 % of its request."""
    work = tmp_path / "wf"
    work.mkdir()
    shutil.copy(ROOT / "config.yaml", work / "config.yaml")
    (work / "Snakefile").write_text(SLURM_SNAKEFILE)
    run_on_slurm(work)  # index runs out of memory: the run fails
    first = audit_workflow(work, work / "audit.csv", safety_factor=SAFETY)
    by_rule = {r["rule"]: r for r in first.rows}
    assert by_rule["index"]["state"] == "OUT_OF_MEMORY" and by_rule["index"]["flag"] == "OOM"
    assert by_rule["folds"]["state"] == "COMPLETED" and by_rule["folds"]["flag"] == "<60% used"
    print("\nbefore --apply:\n" + render_table(first.rows, first.recommendations))
    diff = apply_recommendations(work / "config.yaml", first.recommendations)
    assert "+  index: {mem_mb: 1200, runtime: 10}" in diff
    done = run_on_slurm(work)
    assert done.returncode == 0, done.stderr[-3000:]
    second = audit_workflow(work, work / "audit.csv", safety_factor=SAFETY)
    print("after --apply and a rerun:\n" + render_table(second.rows, second.recommendations))
    last_run = max(second.rows, key=lambda r: int(r["job_id"]))["run"]
    rerun = [r for r in second.rows if r["run"] == last_run]
    assert {r["rule"] for r in rerun} == {"index", "folds"}
    for row in rerun:
        assert row["state"] == "COMPLETED" and 60 <= row["mem_eff"] <= 90, row
    if shutil.which("reportseff", path=str(Path(sys.executable).parent)):
        theirs = reportseff_effs([r["job_id"] for r in second.rows])
        for row in second.rows:
            eff = theirs[row["job_id"]]
            assert abs(row["mem_eff"] - eff["mem"]) <= 1.0 and row["time_eff"] == eff["time"], (row, eff)
            # reportseff drops TotalCPU's milliseconds: at most 1 s of CPU over the elapsed time apart
            assert 0 <= row["cpu_eff"] - eff["cpu"] <= 100 / row["elapsed_s"] + 0.1, (row, eff)


def test_report_material_roc_and_metrics(tmp_path):
    """ROC curves per fold and ensemble from infer's predictions, and the metrics table, as report files."""
    import json

    import polars as pl

    from fvc.infer.report import metrics_table

    infer = tmp_path / "infer" / "naive_cnn"
    infer.mkdir(parents=True)
    labels = [0, 1, 0, 1, 1, 0]
    pl.DataFrame(
        {
            "video_id": [f"v{i}" for i in range(6)],
            "label": labels,
            "prob_fold0": [0.1, 0.9, 0.4, 0.6, 0.8, 0.3],
            "prob_fold1": [0.6, 0.7, 0.2, 0.4, 0.9, 0.1],
            "prob_ensemble": [0.35, 0.8, 0.3, 0.5, 0.85, 0.2],
        }
    ).write_parquet(infer / "predictions.parquet")
    scores = {"accuracy": 0.5, "auc": 0.75, "f1": 0.6}
    (infer / "metrics.json").write_text(
        json.dumps(
            {
                "model": "naive_cnn",
                "videos": 6,
                "folds": [{"fold": 0, **scores}, {"fold": 1, **scores}],
                "ensemble": scores,
            }
        )
    )
    work = make_workdir(tmp_path)
    audit_workflow(
        work,
        tmp_path / "a.csv",
        safety_factor=SAFETY,
        sacct=recorded_sacct([]),
        predictions={"naive_cnn": infer / "predictions.parquet"},
        roc_dir=tmp_path / "roc",
        metrics_html=tmp_path / "metrics.html",
    )
    svg = (tmp_path / "roc" / "naive_cnn.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "ensemble" in svg
    page = (tmp_path / "metrics.html").read_text()
    assert page.count("<tr") == 4 and "ensemble" in page and "0.750" in page
    table = metrics_table({"naive_cnn": infer / "metrics.json"})
    assert table["fold"].to_list() == ["0", "1", "ensemble"]


def test_edit_block_style_rows_keeps_comments():
    text = (
        "models:\n  svm:\n    mem_mb: 1200   # training\n    infer_mem_mb: 1000\n  x3d:\n    mem_mb: 2000\n"
        "resources:\n  folds: {mem_mb: 800, runtime: 10}  # small\n"
    )
    recs = [
        Recommendation("models", "svm", "mem_mb", 1200, 700, "lower", ""),
        Recommendation("models", "svm", "infer_mem_mb", 1000, 600, "lower", ""),
        Recommendation("resources", "folds", "mem_mb", 800, 400, "lower", ""),
    ]
    assert edit_config_text(text, recs) == (
        "models:\n  svm:\n    mem_mb: 700   # training\n    infer_mem_mb: 600\n  x3d:\n    mem_mb: 2000\n"
        "resources:\n  folds: {mem_mb: 400, runtime: 10}  # small\n"
    )


def test_real_plugin_run_matches_reportseff(tmp_path):
    """Two real runs of snakemake-executor-plugin-slurm (the second after --apply): jobs found from the
    snakemake logs alone, attempts per rule, and memory efficiency within 1 point of reportseff's."""
    recorded = FIXTURES / "plugin_run"
    work = tmp_path / "wf"
    shutil.copytree(recorded / "log", work / ".snakemake" / "log")
    shutil.copy(ROOT / "config.yaml", work / "config.yaml")

    def sacct(ids):
        return parse_sacct((recorded / "sacct.txt").read_text(), PRE_GPU_FIELDS)

    result = audit_workflow(work, tmp_path / "a.csv", safety_factor=SAFETY, sacct=sacct, all_runs=True)
    rows = {(r["rule"], r["run"][:4]): r for r in result.rows}
    # Each run submitted index and folds once: attempt 1 in both runs (a rerun is no retry).
    assert sorted(rows) == [("folds", "4a2d"), ("folds", "fc67"), ("index", "4a2d"), ("index", "fc67")]
    assert {r["attempt"] for r in result.rows} == {1}
    assert (
        rows[("index", "fc67")]["state"] == "OUT_OF_MEMORY"
        and rows[("index", "4a2d")]["state"] == "COMPLETED"
    )
    assert result.runs == [rows[("index", "fc67")]["run"], rows[("index", "4a2d")]["run"]]  # oldest first
    lines = (recorded / "reportseff.txt").read_text().splitlines()[1:]
    theirs = {line.split("|")[0]: float(line.split("|")[2]) for line in lines}
    for row in result.rows:
        assert abs(row["mem_eff"] - theirs[row["job_id"]]) <= 1.0


@pytest.mark.slurm
def test_real_sacct_with_accounting_down_falls_back(slurm_cluster, tmp_path, monkeypatch):
    """The real sacct, pointed at a port where no slurmdbd listens: a clear message and benchmark rows."""
    conf = tmp_path / "slurm.conf"
    lines = [
        line
        for line in Path("/etc/slurm/slurm.conf").read_text().splitlines()
        if not line.startswith(("AccountingStorageHost", "AccountingStoragePort"))
    ]
    conf.write_text("\n".join([*lines, "AccountingStorageHost=localhost", "AccountingStoragePort=9"]) + "\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    work = make_workdir(tmp_path)
    write_benchmarks(work)
    result = audit_workflow(work, tmp_path / "a.csv", safety_factor=SAFETY)
    assert result.source == "benchmark" and "Connection refused" in result.message
    assert len(result.rows) == 3


def test_latest_run_by_default_judged_by_its_recorded_config(tmp_path, capsys):
    """The audit shows the latest run alone and compares it with the config that run recorded at its start
    (here a --configfile that asked index for 1300 MB); `--run` picks an older run, which has no record and
    falls back to config.yaml."""
    recorded = FIXTURES / "plugin_run"
    work = tmp_path / "wf"
    shutil.copytree(recorded / "log", work / ".snakemake" / "log")
    shutil.copy(ROOT / "config.yaml", work / "config.yaml")
    run_config = load_config(ROOT / "config.yaml")
    run_config["resources"]["index"]["mem_mb"] = 1300
    second_log = work / ".snakemake" / "log" / "2026-11-22T110848.023880.snakemake.log"
    record = record_run(run_config, ["config.yaml", "big.yaml"], second_log.relative_to(work), work)
    assert record == work / "logs" / "runs" / "2026-11-22T110848.023880.yaml"

    def sacct(ids):
        return parse_sacct((recorded / "sacct.txt").read_text(), PRE_GPU_FIELDS)

    latest = audit_workflow(work, tmp_path / "a.csv", safety_factor=SAFETY, sacct=sacct)
    assert latest.runs == ["4a2d2aaa-5425-422d-9aa6-df298a3b2d35"] and len(latest.rows) == 2
    assert "2026-11-22T110848.023880.yaml" in latest.config_source and "big.yaml" in latest.config_source
    index = next(r for r in latest.recommendations if r.row == "index" and r.key == "mem_mb")
    assert index.current == 1300  # the run's number, not config.yaml's
    older = audit_workflow(work, tmp_path / "a.csv", safety_factor=SAFETY, sacct=sacct, run="fc67")
    assert older.runs == ["fc6777bf-5e08-4aa4-9654-7f6bc1b6abd7"] and older.config_source.endswith(
        "config.yaml"
    )
    assert {r["rule"]: r["flag"] for r in older.rows}["index"] == "OOM"
    with pytest.raises(FvcError, match="unknown; the runs: fc6777bf"):
        audit_workflow(work, tmp_path / "a.csv", safety_factor=SAFETY, sacct=sacct, run="zz")


def test_failed_jobs_show_their_state_not_under_use():
    jobs = parse_sacct((FIXTURES / "old_release.txt").read_text(), PRE_GPU_FIELDS)
    rows = {r["job_id"]: r for r in sacct_rows({j: JobRef(j, "?", "") for j in jobs}, jobs)}
    assert rows["102"]["flag"] == "TIMEOUT"  # 90 % of its memory, but it never finished
    assert rows["104"]["flag"] == "CANCELLED"
    assert rows["103"]["flag"] == "OOM"


ENFORCED_SNAKEFILE = """
import sys

from fvc.slurm.runs import record_run


configfile: "config.yaml"


onstart:
    record_run(config, workflow.configfiles, log)


rule index:
    output:
        "out/index.txt",
    log:
        memory="logs/index/index.memory.jsonl",
    resources:
        mem_mb=lambda wildcards: config["resources"]["index"]["mem_mb"],
        runtime=lambda wildcards: config["resources"]["index"]["runtime"],
    params:
        python=sys.executable,
    shell:
        "{params.python} -c 'import time; from fvc.core.memory import MemoryLog; "
        'log = MemoryLog("{log.memory}", "index"); log.mark("start"); b = b"x" * (250 * 2**20); '
        'time.sleep(3); log.mark("end")\\' && touch {output}'
"""


@pytest.mark.slurm
def test_cgroup_peak_time_limit_and_configfile_on_cluster(slurm_cluster, tmp_path):
    """One real job through the SLURM plugin, run with a --configfile: the audit reads the config the run
    recorded (mem_mb 900, runtime 3 from the override), the job's cgroup peak from its memory log beside
    sacct's MaxRSS, and its time efficiency against the 3-minute limit."""
    work = tmp_path / "wf"
    work.mkdir()
    shutil.copy(ROOT / "config.yaml", work / "config.yaml")
    (work / "big.yaml").write_text("resources:\n  index: {mem_mb: 900, runtime: 3}\n")
    (work / "Snakefile").write_text(ENFORCED_SNAKEFILE)
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT / "src"),
    }
    args = [bin_dir / "snakemake", "--profile", ROOT / "profiles" / "slurm", "--retries", "0", "--jobs", "1",
            "--latency-wait", "5", "out/index.txt", "--configfile", "big.yaml"]  # fmt: skip
    done = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = audit_workflow(work, work / "audit.csv", safety_factor=SAFETY)
    print("\n" + render_table(result.rows, result.recommendations))
    (row,) = result.rows
    assert "big.yaml" in result.config_source and row["req_mem_mb"] == 900
    assert row["peak_source"] == "cgroup" and 250 < row["peak_mem_mb"] <= 900 and row["max_rss_mb"] > 250
    assert row["time_limit_s"] == 180 and row["time_eff"] == pytest.approx(
        100 * row["elapsed_s"] / 180, abs=0.1
    )
    recs = {r.key: r for r in result.recommendations if r.row == "index"}
    assert recs["mem_mb"].current == 900 and "(cgroup)" in recs["mem_mb"].reason
    runtime = recs["runtime"]  # under a minute x 2, below the 5-minute floor: kept at the 3 asked
    assert (runtime.current, runtime.recommended, runtime.action) == (3, 3, "keep")


def sacct_row(**values) -> dict:
    """An audit row as `job_row` makes it, with `values` changed."""
    row = {"job_id": "1", "run": "r", "rule": "folds", "wildcards": "", "model": None, "fold": None,
           "attempt": 1, "state": "COMPLETED", "req_mem_mb": 800.0, "peak_mem_mb": 500.0,
           "peak_source": "MaxRSS", "max_rss_mb": 500.0, "mem_eff": 62.5, "elapsed_s": 100.0,
           "time_limit_s": 600.0, "time_eff": 16.7, "cpus": 1, "cpu_eff": 50.0, "gpus": 0,
           "gpu_peak_mb": None, "gpu_util": None, "source": "sacct", "flag": "", "start": 1000.0,
           "end": 1100.0}  # fmt: skip
    return row | values


def test_cgroup_peak_of_the_job_s_own_records_replaces_max_rss(tmp_path):
    """The memory log holds every attempt's records: only those written while the job ran count, and a
    cgroup peak above the request (not the job's own cgroup) is ignored."""
    log = tmp_path / "logs" / "folds" / "folds.memory.jsonl"
    log.parent.mkdir(parents=True)
    records = [
        {"time": 500.0, "cgroup_peak_mb": 790.0},  # an earlier attempt
        {"time": 1010.0, "cgroup_peak_mb": 300.0},
        {"time": 1090.0, "cgroup_peak_mb": 410.0},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    other = tmp_path / "logs" / "index" / "index.memory.jsonl"
    other.parent.mkdir(parents=True)
    other.write_text(json.dumps({"time": 1050.0, "cgroup_peak_mb": 5000.0}) + "\n")
    folds, index = add_memory_logs([sacct_row(), sacct_row(rule="index", job_id="2")], tmp_path)
    assert (folds["peak_mem_mb"], folds["peak_source"], folds["max_rss_mb"]) == (410.0, "cgroup", 500.0)
    assert folds["mem_eff"] == pytest.approx(51.2) and folds["flag"] == "<60% used"
    assert (index["peak_mem_mb"], index["peak_source"]) == (500.0, "MaxRSS")
    (rec,) = [r for r in recommend([folds], load_config(RECORDED_CONFIG)) if r.key == "mem_mb"]
    assert rec.recommended == 500 and "peak 410 MB (cgroup)" in rec.reason  # 410 x 1.2 = 492 -> 500


def test_runtime_and_cpus_arithmetic():
    config = load_config(RECORDED_CONFIG)
    config["models"]["naive_cnn"]["cpus"] = 4
    rows = [
        sacct_row(elapsed_s=130.0),  # folds: 130 s x 2 = 4.3 min -> 5 (the floor)
        sacct_row(job_id="2", elapsed_s=1000.0),  # the longest: 1000 s x 2 = 33.3 min -> 34
        sacct_row(job_id="3", elapsed_s=5000.0, state="FAILED"),  # a failure says nothing about time
        sacct_row(job_id="4", rule="augment", state="TIMEOUT", time_limit_s=3600.0),  # 60 min x 1.5 = 90
        # naive_cnn on 4 CPUs: at most 1.5 CPUs busy (37.5 %) x 1.2 = 1.8 -> 2
        sacct_row(job_id="5", rule="train", wildcards="naive_cnn_0", model="naive_cnn", fold=0, cpus=4,
                  cpu_eff=37.5, elapsed_s=30.0),
        sacct_row(job_id="6", rule="infer", wildcards="naive_cnn", model="naive_cnn", cpus=4, cpu_eff=20.0),
    ]  # fmt: skip
    recs = {(r.row, r.key): r for r in recommend(rows, config) if r.key in ("runtime", "cpus")}
    assert (recs[("folds", "runtime")].current, recs[("folds", "runtime")].recommended) == (10, 34)
    assert recs[("folds", "runtime")].basis == "max elapsed 16:40"
    assert (recs[("augment", "runtime")].recommended, recs[("augment", "runtime")].action) == (
        90,
        "raise-timeout",
    )
    assert recs[("naive_cnn", "runtime")].recommended == 5  # train's 30 s; infer has no runtime key
    cpus = recs[("naive_cnn", "cpus")]
    assert (cpus.current, cpus.recommended, cpus.action) == (
        4,
        2,
        "lower",
    ) and "1.50 of 4 CPU(s)" in cpus.reason
    assert rows[0]["time_eff"] == pytest.approx(16.7)


def test_time_efficiency_on_recorded_jobs():
    """Real jobs with a 1-minute limit: time and CPU efficiency as reportseff defines them; the job killed at
    its limit shows TIMEOUT (not its 0.4 % memory use) and its rule's runtime is raised."""
    jobs = parse_sacct((FIXTURES / "time_fields.txt").read_text())
    refs = {job_id: JobRef(job_id, "?", "") for job_id in jobs}
    rows = {r["job_id"]: r for r in sacct_rows(refs, jobs)}
    done, timeout = rows["649"], rows["650"]
    assert (done["time_limit_s"], done["time_eff"]) == (60, pytest.approx(8.3))  # 5 s of 60
    assert done["cpu_eff"] == pytest.approx(3.7)  # 0.371 s of CPU over 2 CPUs x 5 s
    assert (timeout["state"], timeout["flag"], timeout["time_eff"]) == (
        "TIMEOUT",
        "TIMEOUT",
        pytest.approx(103.3),
    )
    config = load_config(RECORDED_CONFIG)
    config["models"]["naive_cnn"]["runtime"] = 1  # what the job asked for
    recs = {(r.row, r.key): r for r in recommend(rows.values(), config)}
    train = recs[("naive_cnn", "runtime")]
    assert (train.current, train.recommended, train.action) == (1, 2, "raise-timeout")  # 1 min x 1.5 -> 2
    augment = recs[("augment", "runtime")]
    assert (augment.current, augment.recommended, augment.action) == (60, 5, "lower")  # 5 s x 2: the floor
    threads = recs[("", "decode_threads")]  # augment's 2 CPUs, 0.07 of them busy (3.7 %) x 1.2 -> 1
    assert (threads.path, threads.current, threads.recommended, threads.action) == (
        "augment.decode_threads",
        2,
        1,
        "lower",
    )
    assert "  decode_threads: 1  # lower: augment: 1 successful job(s)" in snippet([threads])
    text = "augment:\n  num_frames: 8\n  decode_threads: 2      # the job's CPUs\nfolds:\n  k: 3\n"
    assert edit_config_text(text, [threads], today=datetime.date(2026, 11, 29)) == (
        "augment:\n  num_frames: 8\n  decode_threads: 1  # the job's CPUs; audit 2026-11-29: decode_threads "
        "0.07 CPUs busy\nfolds:\n  k: 3\n"
    )


def test_cli_run_options(tmp_path, capsys):
    """`--run` and `--all-runs` exclude each other; without SLURM jobs the audit says it saw no run."""
    assert main(["audit", "--run", "fc67", "--all-runs"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    work = tmp_path / "wf"
    work.mkdir()
    shutil.copy(RECORDED_CONFIG, work / "config.yaml")
    write_benchmarks(work)
    assert main(["audit", "--workdir", str(work), "--all-runs"]) == 0
    out = capsys.readouterr().out
    assert "run(s): (no SLURM run)" in out and f"config: {work / 'config.yaml'}" in out


def test_shard_jobs_are_sized_by_their_stage_s_row():
    """augment_shard's jobs and the augment merge job share `resources.augment`: the recommendation comes from
    the biggest of them (a shard), and the shards' CPUs set augment.decode_threads."""
    config = load_config(RECORDED_CONFIG)
    rows = [
        sacct_row(rule="augment_shard", wildcards="0", peak_mem_mb=900.0, cpus=2, cpu_eff=40.0),
        sacct_row(job_id="2", rule="augment_shard", wildcards="1", peak_mem_mb=700.0, cpus=2, cpu_eff=30.0),
        sacct_row(job_id="3", rule="augment", peak_mem_mb=400.0),
    ]
    recs = {(r.table, r.row, r.key): r for r in recommend(rows, config, safety_factor=1.2)}
    augment = recs[("resources", "augment", "mem_mb")]  # 900 MB x 1.2 = 1080 -> 1100
    assert (augment.current, augment.recommended) == (config["resources"]["augment"]["mem_mb"], 1100)
    assert "augment_shard" not in {r.row for r in recs.values()}
    assert recs[("augment", "", "decode_threads")].recommended == 1  # 0.8 CPUs busy x 1.2 -> 1
