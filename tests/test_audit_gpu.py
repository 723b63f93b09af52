"""The audit's GPU side: GPUs held and GPU usage from sacct's TRES columns (a hand-made fixture in the format
of a site that gathers gpumem, and one recorded on the GRES test cluster), CUDA peaks from the memory logs,
idle / unused GPUs flagged, vram_mb and gpus recommended and written into config.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from fvc.core.config import load_config
from fvc.slurm.jobs import JobRef, parse_comment
from fvc.slurm.recommend import edit_config_text, recommend, snippet
from fvc.slurm.render import render_table
from fvc.slurm.rows import add_memory_logs, sacct_rows
from fvc.slurm.sacct import FIELDS, MB, TIME_FIELDS, parse_sacct, parse_tres

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "sacct"
#: The GPU fixtures were recorded before fvc asked sacct for the time limit, start and end.
PRE_TIME_FIELDS = tuple(f for f in FIELDS if f not in TIME_FIELDS)


def rows_of(name: str) -> list[dict]:
    jobs = parse_sacct((FIXTURES / name).read_text(), PRE_TIME_FIELDS)
    refs = {}
    for job_id, job in jobs.items():
        rule, wildcards = parse_comment(job.allocation.comment)
        refs[job_id] = JobRef(job_id, rule, wildcards)
    return sacct_rows(refs, jobs)


def test_tres_lists_with_typed_gpus():
    assert parse_tres("billing=4,cpu=4,gres/gpu:a100=1,mem=16000M,node=1")["gres/gpu"] == "1"
    assert parse_tres("gres/gpu=2,gres/gpu:a100=2")["gres/gpu"] == "4"  # type lines add to the plain count
    assert parse_tres("") == {}


def test_site_with_gpumem_gives_peak_utilisation_and_idle_flags():
    jobs = parse_sacct((FIXTURES / "gpu_site_handmade.txt").read_text(), PRE_TIME_FIELDS)
    assert (jobs["201"].gpus, jobs["201"].gpu_mem, jobs["201"].gpu_util) == (1, 6120 * MB, 87.0)
    assert (jobs["203"].gpus, jobs["203"].gpu_mem) == (0, None)
    rows = {r["job_id"]: r for r in rows_of("gpu_site_handmade.txt")}
    assert (rows["201"]["gpus"], rows["201"]["gpu_peak_mb"], rows["201"]["flag"]) == (1, 6120.0, "")
    assert rows["202"]["flag"] == "GPU idle (<20% used)"
    assert (rows["203"]["gpus"], rows["203"]["gpu_peak_mb"]) == (0, None)
    table = render_table(list(rows.values()), [])
    assert "GPU MB" in table.splitlines()[0] and "6120" in table


def test_recorded_gres_cluster_run_shows_the_gpu_on_train_and_infer_only():
    rows = rows_of("gpu_cluster.txt")
    held = {(r["rule"], r["wildcards"]): r["gpus"] for r in rows}
    assert {key: n for key, n in held.items() if n} == {
        ("train", "naive_cnn_0"): 1,
        ("train", "naive_cnn_1"): 1,
        ("infer", "naive_cnn"): 1,
    }
    assert all(r["gpu_peak_mb"] is None and r["gpu_util"] is None for r in rows)  # no GPU usage gathered


def write_log(work: Path, rel: str, records: list[dict]) -> None:
    path = work / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"point": "epoch", **r}) + "\n" for r in records))


def test_memory_logs_give_cuda_peaks_and_unused_gpus(tmp_path):
    rows = rows_of("gpu_site_handmade.txt")
    write_log(
        tmp_path, "logs/train/x3d/fold0.memory.jsonl", [{"cuda_peak_reserved_mb": 7000.0}, {"rss_mb": 1}]
    )
    write_log(tmp_path, "logs/train/slowfast/fold0.memory.jsonl", [{"rss_mb": 900.0}])  # ran on the CPU
    by_id = {r["job_id"]: r for r in add_memory_logs(rows, tmp_path)}
    assert by_id["201"]["gpu_peak_mb"] == 7000.0  # the reserved peak beats sacct's 6120 MB
    assert by_id["202"]["flag"] == "GPU idle (<20% used); GPU unused"


def test_vram_and_gpus_recommended_and_written_into_the_config(tmp_path):
    config_path = ROOT / "config.yaml"
    config = load_config(config_path)
    rows = rows_of("gpu_site_handmade.txt")
    write_log(tmp_path, "logs/train/slowfast/fold0.memory.jsonl", [{"rss_mb": 900.0}])
    recs = {(r.row, r.key): r for r in recommend(add_memory_logs(rows, tmp_path), config, 1.2)}
    vram = recs[("x3d", "vram_mb")]
    assert (vram.current, vram.recommended, vram.action) == (None, 7400, "raise")  # 6120 x 1.2, rounded up
    assert "any gpu_model with 7400 MB or more fits" in vram.reason
    gpus = recs[("slowfast", "gpus")]
    assert (gpus.recommended, gpus.action) == (0, "lower") and "ran without CUDA" in gpus.reason
    assert "x3d: {mem_mb:" in snippet(recs.values()) and "vram_mb: 7400" in snippet(recs.values())
    new = yaml.safe_load(edit_config_text(config_path.read_text(), [vram, gpus]))
    assert new["models"]["x3d"]["vram_mb"] == 7400 and new["models"]["slowfast"]["gpus"] == 0
    assert new["models"]["x3d"]["mem_mb"] == config["models"]["x3d"]["mem_mb"]
