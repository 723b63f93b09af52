"""Set-ups the benchmarks share: the augment benchmarks' indexed demo videos and their fvc run, and the
training benchmarks' demo-like clip set with its config.yaml rows.

- `index_subsets(workdir, sizes, distinct)`: demo videos made and indexed once, and one index per size.
- `run_augment(spec)`: fvc's augment stage over `spec['index']` into `spec['out']`, with `CLIP` settings.
- `training_set(config_path, root, videos)`: the config, its model rows, and clips written for them.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLIP = {"num_frames": 8, "size": 64, "num_augmentations": 2, "seed": 1234, "decode_threads": 2}


def make_index(workdir: Path, videos: int, distinct: int) -> Path:
    """`distinct` demo videos extracted from their archive, listed cyclically as `videos` ids (each id gets
    its own augmentation seeds), and probed into a video index (parquet)."""
    import polars as pl

    from fvc.data.archive import safe_extract
    from fvc.data.demo import make_demo_dataset
    from fvc.data.index import build_index

    rows = make_demo_dataset(workdir / "demo", videos=min(videos, distinct), seed=11)
    safe_extract(workdir / "demo" / "fvc_demo.tar.gz", workdir / "videos")
    with (workdir / "videos.csv").open("w", newline="") as fh:
        columns = ["video_id", "path", "label", "group", "sha256", "size"]
        writer = csv.DictWriter(fh, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for i in range(videos):
            row, copy = rows[i % len(rows)], i // len(rows)
            path = workdir / "videos" / row["video_id"]
            writer.writerow(
                {
                    **row,
                    "video_id": f"copy{copy}/{row['video_id']}",
                    "group": f"{row['group']}_{copy}",
                    "path": str(path),
                    "label": int(row["label"] == "fake"),
                }
            )
    index = workdir / "index.parquet"
    build_index(workdir / "videos.csv", index, workdir / "index.csv", workdir / "rejected.csv")
    table = pl.read_parquet(index)
    print(
        f"{table.height} demo videos: {table['width'].min()}-{table['width'].max()} px wide, "
        f"{table['frames'].min()}-{table['frames'].max()} frames"
    )
    return index


def index_subsets(workdir: Path, sizes: list[int], distinct: int) -> list[tuple[int, Path]]:
    """Each size with an index of that many videos' first rows (`index_<n>.parquet`), after making and
    indexing the largest size's videos once (timed on stdout)."""
    import polars as pl

    start = time.perf_counter()
    full = pl.read_parquet(make_index(workdir, max(sizes), distinct))
    print(f"made and indexed the videos in {time.perf_counter() - start:.0f} s\n")
    subsets = [(n, workdir / f"index_{n}.parquet") for n in sizes]
    for n, subset in subsets:
        full.head(n).write_parquet(subset)
    return subsets


def run_augment(spec: dict[str, Any]) -> dict[str, Any]:
    """fvc's augment stage (memory log, journal, atomic clip files) over `spec['index']` into `spec['out']`:
    the peak RSS after its imports (MB), seconds, clips listed and clips made."""
    from fvc.clips.augment import augment_all
    from fvc.core.memory import MB, peak_rss_bytes

    baseline = peak_rss_bytes() / MB
    out = Path(spec["out"])
    start = time.perf_counter()
    report = augment_all(
        spec["index"],
        out / "clips.csv",
        out / "rejected.csv",
        out / "clips",
        out / "clips.partial.csv",
        memory_log=out / "memory.jsonl",
        **CLIP,
    )
    seconds = time.perf_counter() - start
    return {"baseline_mb": baseline, "seconds": seconds, "clips": report.clips, "made": report.made}


def merged_config(config_path: str, overlay: str | None = None) -> dict[str, Any]:
    """The config at `config_path` with `overlay` merged over it as Snakemake merges `--configfile`,
    validated (defaults filled in)."""
    import yaml
    from snakemake.utils import update_config

    from fvc.core.config import validate_config

    config = yaml.safe_load(Path(config_path).read_text())
    if overlay:
        update_config(config, yaml.safe_load(Path(overlay).read_text()))
    return validate_config(config, f"{config_path} + {overlay}" if overlay else config_path)


def training_set(
    config_path: str,
    root: Path,
    videos: int,
    overlay: str | None = None,
    augmentations: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """The config at `config_path` (with `overlay` merged over it), its model rows (name -> ModelSpec), and
    demo-like clips for them under `root` (`videos` videos x the config's augment settings, or `augmentations`
    when given, tests/train_fixtures.py): the cases' `root`, `clips` and `folds` paths."""
    sys.path.insert(0, str(ROOT / "tests"))
    from train_fixtures import write_dataset

    from fvc.core.config import model_specs

    config = merged_config(config_path, overlay)
    augment = config["augment"]
    clips, folds = write_dataset(
        root,
        videos=videos,
        augmentations=augment["num_augmentations"] if augmentations is None else augmentations,
        num_frames=augment["num_frames"],
        size=augment["size"],
    )
    return config, model_specs(config), {"root": str(root), "clips": str(clips), "folds": str(folds)}
