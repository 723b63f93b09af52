"""Scale run: a synthetic corpus served over loopback HTTP, through download -> index -> augment -> folds with
`shards.count` = N for each N given: wall time, each job's peak memory, and whether the merged outputs
(videos.csv, video_index.csv, clips.csv, folds.csv) are byte-identical across N.

The corpus is the demo's scenes (real and fake classes, groups with re-encodes), made tiny (64x48, 16 frames),
encoded in parallel once and cached (`--cache`, default ~/.cache/fvc-scale/<videos>-<seed>); each N runs in a
fresh copy of the workflow against one HTTP server, so every run sees the same manifest.

    .venv/bin/python benchmarks/scale.py                                # 300 videos, N = 1, 4 on SLURM
    .venv/bin/python benchmarks/scale.py --videos 5000 --shards 1 4 16  # the full size
    .venv/bin/python benchmarks/scale.py --profile profiles/local --videos 12 --shards 1 2   # no cluster

Peaks per job: the rule's own process peak from its memory log (logs/<rule>/*.memory.jsonl: largest
`peak_rss_mb`; not the cgroup's, which outside SLURM is the whole machine's), and on SLURM sacct's MaxRSS
(largest over the job's steps, the two Snakemake processes included). Needs the test cluster for the SLURM
profile (`tests/slurm/cluster.sh start`).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing import Pool
from pathlib import Path
from statistics import median

from slurm_vs_local import SUBMITTED, copy_workflow, run_case

from fvc.core.paths import Layout
from fvc.data.demo import DemoVideo, encode_video, plan_videos

CORPUS_VERSION = 1  # bump when the corpus's videos change, so a cached corpus is made again
CORPUS_CSV = "corpus.csv"
RESULTS_DIR = "results"
TARGET = "folds"


def tiny(video: DemoVideo) -> DemoVideo:
    """The demo video at 64x48 and 16 frames: seconds of work for hundreds of videos."""
    return dataclasses.replace(video, width=64, height=48, source_width=64, source_height=48, frames=16)


def _encode(video: DemoVideo) -> bytes:
    return encode_video(video)


def make_corpus(folder: Path, videos: int, seed: int, workers: int) -> Path:
    """`folder/files/<video_id>` and `folder/corpus.csv` (video_id, label, group, sha256, size), made with
    `workers` processes, or kept when `folder` already holds this corpus; returns corpus.csv."""
    stamp = {"version": CORPUS_VERSION, "videos": videos, "seed": seed}
    table = folder / CORPUS_CSV
    if table.is_file() and json.loads((folder / "corpus.json").read_text()) == stamp:
        return table
    shutil.rmtree(folder, ignore_errors=True)
    planned = [tiny(video) for video in plan_videos(videos, seed)]
    with Pool(workers) as pool:
        encoded = pool.map(_encode, planned, chunksize=8)
    rows = []
    for video, data in zip(planned, encoded, strict=True):
        path = folder / "files" / video.video_id
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append(
            {
                "video_id": video.video_id,
                "label": video.label,
                "group": video.group,
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
            }
        )
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (folder / "corpus.json").write_text(json.dumps(stamp))
    return table


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(files: Path) -> Iterator[str]:
    """Serve the folder `files` on a loopback port; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(files))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def write_manifest(corpus: Path, base_url: str, dest: Path) -> Path:
    """An fvc manifest (video_id,url,label,group,sha256,size) of the corpus, each URL under `base_url`."""
    with corpus.open() as handle:
        rows = list(csv.DictReader(handle))
    with dest.open("w", newline="") as handle:
        fields = ["video_id", "url", "label", "group", "sha256", "size"]
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "url": f"{base_url}/{row['video_id']}"})
    return dest


def run_config(manifest: Path, shards: int, dest: Path) -> Path:
    """The run's --configfile: the manifest, `shards.count`, a fast download (no pause between requests to
    the one loopback host) and the small clip sizes of the SLURM tests."""
    config = {
        "results_dir": RESULTS_DIR,
        "dataset": {"demo": {"enabled": False}, "manifest": str(manifest)},
        "download": {"per_site_interval_s": 0, "workers": 8},
        "shards": {"count": shards},
        "augment": {"num_frames": 4, "size": 32, "num_augmentations": 1},
        "folds": {"k": 2, "test_fraction": 0.25},
        "train": {"models": ["logistic_regression"]},
    }
    dest.write_text(json.dumps(config, indent=1))
    return dest


def merged_outputs(workdir: Path) -> dict[str, Path]:
    """The merged outputs of the data stages, by name."""
    layout = Layout(RESULTS_DIR)
    paths = {
        "videos.csv": layout.download.videos_csv,
        "video_index.csv": layout.index.csv,
        "clips.csv": layout.augment.clips_csv,
        "folds.csv": layout.folds.folds_csv,
    }
    return {name: workdir / path for name, path in paths.items()}


def output_digests(workdir: Path) -> dict[str, str]:
    """sha256 of each merged output ("missing" for one that is not there)."""
    return {
        name: hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
        for name, path in merged_outputs(workdir).items()
    }


def differing(digests: dict[int, dict[str, str]]) -> list[str]:
    """Names of the outputs whose digest is not the same for every N (or that are missing)."""
    names = next(iter(digests.values()))
    return [
        name
        for name in names
        if len({run[name] for run in digests.values()}) != 1
        or any(run[name] == "missing" for run in digests.values())
    ]


def memory_log_peaks(workdir: Path) -> dict[str, float]:
    """Each job's peak MB from its memory log (largest `peak_rss_mb` of its records), by the log's path under
    logs/ less `.memory.jsonl`."""
    peaks = {}
    for path in sorted((workdir / "logs").rglob("*.memory.jsonl")):
        values = [
            record.get("peak_rss_mb") or 0.0 for record in map(json.loads, path.read_text().splitlines())
        ]
        name = str(path.relative_to(workdir / "logs")).removesuffix(".memory.jsonl")
        peaks[name] = max(values, default=0.0)
    return peaks


def sacct_peaks(log: str) -> dict[str, float]:
    """SLURM job (its comment, `rule_<rule>_wildcards_<values>`) -> largest MaxRSS over its steps, in MB;
    empty for a run that submitted nothing (the local profile)."""
    ids = [slurm_id for _, slurm_id in SUBMITTED.findall(log)]
    if not ids:
        return {}
    out = subprocess.run(
        ["sacct", "-P", "-n", "-j", ",".join(ids), "--format=JobID,Comment,MaxRSS"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names: dict[str, str] = {}
    peaks: dict[str, float] = {}
    for line in out.splitlines():
        job_id, comment, max_rss = line.split("|")
        job = job_id.split(".")[0]
        if comment:
            names[job] = comment.removeprefix("rule_").replace("_wildcards_", " ")
        peaks[job] = max(peaks.get(job, 0.0), rss_mb(max_rss))
    return {names.get(job, job): peak for job, peak in peaks.items()}


def rss_mb(value: str) -> float:
    """sacct's MaxRSS (`123456K`, `12M`, `1.5G`, empty) in MB."""
    match = re.fullmatch(r"([\d.]+)([KMGT]?)", value.strip())
    if not match:
        return 0.0
    scale = {"": 1 / 1024**2, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}[match[2]]
    return float(match[1]) * scale


def rule_of(job: str) -> str:
    """The rule of a job's name (`index/shard3` -> index, `augment 3` -> augment)."""
    return re.split(r"[/ ]", job, maxsplit=1)[0]


def peak_summary(peaks: dict[str, float]) -> str:
    """Per rule: jobs, largest and median peak, e.g. `index 4x max 210 med 205`."""
    by_rule: dict[str, list[float]] = {}
    for job, peak in peaks.items():
        by_rule.setdefault(rule_of(job), []).append(peak)
    return ", ".join(f"{rule} {len(v)}x max {max(v):.0f} med {median(v):.0f}" for rule, v in by_rule.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--profile", default="profiles/slurm")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--workers", type=int, default=2, help="processes encoding the corpus")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "fvc-scale")
    parser.add_argument("--keep", type=Path, default=None, help="run in this folder and keep it")
    args = parser.parse_args(argv)

    corpus = make_corpus(args.cache / f"{args.videos}-{args.seed}", args.videos, args.seed, args.workers)
    base = Path(tempfile.mkdtemp(prefix="fvc-scale-")) if args.keep is None else args.keep
    base.mkdir(parents=True, exist_ok=True)
    rows, digests = [], {}
    try:
        with serve(corpus.parent / "files") as url:
            manifest = write_manifest(corpus, url, base / "manifest.csv")
            for shards in args.shards:
                workdir = copy_workflow(base / f"n{shards}", run_config(manifest, shards, base / "c.json"))
                wall, driver_mb, log = run_case(workdir, args.profile, TARGET)
                digests[shards] = output_digests(workdir)
                peaks = memory_log_peaks(workdir)
                rows.append((shards, wall, driver_mb, peaks, sacct_peaks(log)))
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)

    print(f"{args.videos} videos, profile {args.profile}, target {TARGET}")
    print(f"{'N':>3} {'wall s':>8} {'jobs':>5} {'driver MB':>10}  peak MB per job (memory log; sacct MaxRSS)")
    for shards, wall, driver_mb, peaks, sacct in rows:
        print(f"{shards:3d} {wall:8.1f} {len(peaks):5d} {driver_mb:10.0f}  {peak_summary(peaks)}")
        if sacct:
            print(f"{'':29}  sacct: {peak_summary(sacct)}")
    bad = differing(digests)
    verdict = "identical" if not bad else f"DIFFERENT: {', '.join(bad)}"
    print(f"\nmerged outputs across N = {', '.join(map(str, args.shards))}: {verdict}")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
