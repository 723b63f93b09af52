"""Score new videos with trained models (`fvc predict`, rule `predict`): find the videos (files, folders
searched recursively, CSVs with a `path` column), probe each as the index stage does (an unusable file is
listed in rejected.csv with its reason and the others go on), then per model score every video from
`infer.clips_per_video` clips with each member's export (folds, or folds x seeds), loaded lean one at a time
after the pre-flight (`fvc.infer.inference.score_videos`): a video's probability is the mean over its clips
and the members and, when asked, over the models (model `ensemble`). Writes one row per video and model
(parquet + CSV), with the folds and members it averages."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from fvc.core.atomic import atomic_path
from fvc.core.devices import resolve_device
from fvc.core.errors import FvcError
from fvc.core.memory import MemoryLog
from fvc.core.metrics import THRESHOLD
from fvc.core.paths import MEMBER_RE, PredictFiles, parse_member
from fvc.data.index import ProbeError, probe_video
from fvc.infer.inference import read_export_config, score_videos
from fvc.infer.precision import check_precision

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .flv .wmv .mpg .mpeg .ts .mts .3gp .ogv".split()
)  # fmt: skip
PREDICTION_SCHEMA = {
    "video": pl.Utf8, "model": pl.Utf8, "prob_fake": pl.Float64, "label": pl.Utf8, "pred": pl.Int64,
    "clips": pl.Int64, "folds": pl.Int64, "members": pl.Int64,
}  # fmt: skip
REJECTED_SCHEMA = {"video": pl.Utf8, "reason": pl.Utf8}
ENSEMBLE = "ensemble"


class PredictError(FvcError, ValueError):
    """Nothing to score, or exports that cannot score; the message names the files."""


def _csv_paths(table: Path) -> list[Path]:
    """The `path` column of a CSV of videos, relative paths taken from the CSV's folder."""
    try:
        paths = pl.read_csv(table, columns=["path"], infer_schema=False)["path"].drop_nulls()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise PredictError(f"{table}: not a CSV of videos with a `path` column ({exc})") from exc
    return [p if p.is_absolute() else table.parent / p for p in map(Path, paths)]


def find_videos(inputs: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], list[dict[str, str]]]:
    """The video files of `inputs` in the order given (a folder's video files sorted; each file once), and
    the inputs that are missing, with their reason."""
    found: dict[Path, None] = {}
    missing = []
    for item in map(Path, inputs):
        if item.is_dir():
            found.update(
                dict.fromkeys(sorted(p for p in item.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES))
            )
        elif item.suffix.lower() == ".csv" and item.is_file():
            found.update(dict.fromkeys(_csv_paths(item)))
        elif item.exists():
            found[item] = None
        else:
            missing.append({"video": str(item), "reason": "missing file"})
    return list(found), missing


def probe_videos(paths: Sequence[Path], check_frames: int) -> tuple[list[dict], list[dict[str, str]]]:
    """Probe every video as the index stage does: the usable ones' rows (`video`, `path`, `frames`,
    `rotation`) and the others with their reason."""
    rows, rejected = [], []
    for path in paths:
        try:
            info = probe_video(path, check_frames=check_frames)
        except Exception as exc:  # odd media trips odd errors: each rejects only its own file
            reason = str(exc) if isinstance(exc, ProbeError) else f"{type(exc).__name__}: {exc}"
            log.warning("predict: rejected %s: %s", path, reason)
            rejected.append({"video": str(path), "reason": reason})
            continue
        rows.append({"video": str(path), "path": str(path), "frames": info.frames, "rotation": info.rotation})
    return rows, rejected


def fold_weights(export_dir: str | os.PathLike[str]) -> list[Path]:
    """A folder's member exports `fold<k>.safetensors` (or, trained over several seeds,
    `fold<k>-seed<s>.safetensors`), in fold and seed order."""
    folder = Path(export_dir)
    numbered = [
        (member, p)
        for p in folder.glob("fold*.safetensors")
        if MEMBER_RE.fullmatch(p.stem) and (member := parse_member(p)) is not None
    ]
    if not numbered:
        raise PredictError(f"{folder}: no fold exports (fold0.safetensors, ...); train the model first")
    return [p for (fold, seed), p in sorted(numbered, key=lambda mp: (mp[0][0], mp[0][1] or 0))]


def fold_count(weights: Sequence[str | os.PathLike[str]]) -> int:
    """The folds among member exports (a fold trained with several seeds counts once)."""
    return len({parsed[0] if (parsed := parse_member(p)) else str(p) for p in weights})


def exports_of(export_dirs: Sequence[str | os.PathLike[str]]) -> dict[str, list[Path]]:
    """Each folder's model (from its first export's config) and its fold exports."""
    exports: dict[str, list[Path]] = {}
    for folder in export_dirs:
        weights = fold_weights(folder)
        model = read_export_config(weights[0])["model"]
        if model in exports:
            raise PredictError(
                f"{folder}: a second set of {model} exports (the first: {exports[model][0].parent})"
            )
        exports[model] = weights
    return exports


def _rows(
    videos: list[str], model: str, probs: np.ndarray, clips: int, folds: int, members: int
) -> list[dict]:
    return [
        {
            "video": video,
            "model": model,
            "prob_fake": float(p),
            "label": "fake" if p >= THRESHOLD else "real",
            "pred": int(p >= THRESHOLD),
            "clips": clips,
            "folds": folds,
            "members": members,
        }
        for video, p in zip(videos, probs, strict=True)
    ]


def _write(frame: pl.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp) if path.suffix == ".parquet" else frame.write_csv(tmp)


def predict_all(
    inputs: Sequence[str | os.PathLike[str]],
    exports: Mapping[str, Sequence[str | os.PathLike[str]]],
    out: PredictFiles,
    *,
    device: str,
    batch_size: int,
    precision: str,
    clips_per_video: int,
    ensemble_models: bool = False,
    check_frames: int = 8,
    memory_log: str | os.PathLike[str] | None = None,
    reserved_mb: int = 0,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Score the videos of `inputs` with each model's fold exports (`exports`: model -> exports in fold
    order); write the predictions (one row per video and model, plus model `ensemble` when
    `ensemble_models` and several models) and rejected.csv under `out`. Returns (predictions, rejected).
    Raises PredictError, after writing rejected.csv, when no video is usable."""
    memory = MemoryLog(memory_log, "predict")
    memory.mark("start", inputs=len(inputs), models=len(exports))
    dev = resolve_device(device, "infer.device")
    check_precision(precision, dev)
    paths, rejected = find_videos(inputs)
    rows, unusable = probe_videos(paths, check_frames)
    rejected_table = pl.DataFrame(rejected + unusable, schema=REJECTED_SCHEMA)
    out.path.mkdir(parents=True, exist_ok=True)
    _write(rejected_table, out.rejected_csv)
    memory.mark("indexed", videos=len(rows), rejected=rejected_table.height)
    if not rows:
        raise PredictError(
            f"no video to score in {', '.join(map(str, inputs))}: {rejected_table.height} rejected "
            f"(reasons in {out.rejected_csv})"
        )
    videos = [row["video"] for row in rows]
    records, per_model = [], []
    for model, weights in exports.items():
        scores = score_videos(
            model,
            list(weights),
            rows,
            device=dev,
            batch_size=batch_size,
            precision=precision,
            clips_per_video=clips_per_video,
            memory=memory,
            reserved_mb=reserved_mb,
        )
        probs = scores.probs.mean(axis=(0, 2))  # each video's clips, then the members (folds x seeds)
        per_model.append(probs)
        records += _rows(videos, model, probs, clips_per_video, fold_count(weights), len(weights))
    if ensemble_models and len(exports) > 1:
        folds = sum(fold_count(w) for w in exports.values())
        members = sum(len(w) for w in exports.values())
        records += _rows(videos, ENSEMBLE, np.mean(per_model, axis=0), clips_per_video, folds, members)
    table = pl.DataFrame(records, schema=PREDICTION_SCHEMA)
    _write(table, out.predictions_parquet)
    _write(table, out.predictions_csv)
    memory.mark("end", videos=len(rows), rows=table.height)
    return table, rejected_table


def format_predictions(table: pl.DataFrame, rejected: pl.DataFrame) -> str:
    """A short text table: each video's probability and label per model, then the rejected videos."""
    models = table["model"].unique(maintain_order=True).to_list()
    wide = table.pivot(on="model", index="video", values="prob_fake", aggregate_function="first")
    width = max(len("video"), *(len(v) for v in wide["video"]))
    head = f"{'video':<{width}}  " + "  ".join(f"{m:>{max(len(m), 12)}}" for m in models)
    lines = [head]
    for row in wide.iter_rows(named=True):
        cells = [
            f"{row[m]:.3f} {'fake' if row[m] >= THRESHOLD else 'real'}".rjust(max(len(m), 12)) for m in models
        ]
        lines.append(f"{row['video']:<{width}}  " + "  ".join(cells))
    if rejected.height:
        lines.append(f"rejected {rejected.height}:")
        lines += [f"  {r['video']}: {r['reason']}" for r in rejected.iter_rows(named=True)]
    return "\n".join(lines)
