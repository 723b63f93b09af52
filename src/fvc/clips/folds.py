"""Grouped, stratified splits of the videos of clips.csv: a held-out test set, then k cv folds.

Groups (a video's cascade) never straddle two splits, so near-duplicates cannot leak from training into
validation or test. Validation and test use only the original clips (aug_idx 0); training uses every clip.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from fvc.core.atomic import atomic_path
from fvc.core.errors import FvcError
from fvc.core.memory import MemoryLog
from fvc.core.seeding import stable_seed

if TYPE_CHECKING:
    from sklearn.model_selection import StratifiedGroupKFold

log = logging.getLogger(__name__)

FOLDS_COLUMNS = ("video_id", "group", "label", "split", "fold")
CLIPS_SCHEMA = {
    "clip_path": pl.String,
    "label": pl.Int64,
    "group": pl.String,
    "original_video": pl.String,
    "aug_idx": pl.Int64,
    "seed": pl.UInt64,
    "num_frames": pl.Int64,
    "height": pl.Int64,
    "width": pl.Int64,
}
FOLDS_SCHEMA = {
    "video_id": pl.String,
    "group": pl.String,
    "label": pl.Int64,
    "split": pl.String,
    "fold": pl.Int64,
}


class FoldError(FvcError, ValueError):
    """Inputs that cannot be split as asked; the message names the file and the numbers."""


def _read_csv(path: str | os.PathLike[str], schema: dict[str, type[pl.DataType]]) -> pl.DataFrame:
    """A CSV with exactly the expected columns, typed; a clear error naming the file otherwise."""
    try:
        frame = pl.read_csv(Path(path), schema_overrides=schema, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise FoldError(f"{path}: cannot read as CSV: {exc}") from exc
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        raise FoldError(f"{path}: missing columns {missing} (has {frame.columns})")
    return frame.select(list(schema))


def read_videos(clips_csv: str | os.PathLike[str]) -> pl.DataFrame:
    """One row per original video of clips.csv (video_id, group, label), sorted by video_id; every clip of a
    video must agree on its label and group."""
    clips = _read_csv(clips_csv, CLIPS_SCHEMA)
    videos = clips.select(video_id="original_video", group="group", label="label").unique()
    clash = videos.group_by("video_id").len().filter(pl.col("len") > 1)
    if clash.height:
        raise FoldError(
            f"{clips_csv}: videos with clips of different labels or groups: "
            f"{clash['video_id'].head(5).to_list()}"
        )
    bad = videos.filter(~pl.col("label").is_in([0, 1]))
    if bad.height:
        raise FoldError(
            f"{clips_csv}: labels must be 0 or 1, video {bad['video_id'][0]} has {bad['label'][0]}"
        )
    return videos.sort("video_id")


def _groups_per_label(videos: pl.DataFrame) -> dict[int, int]:
    """How many distinct groups hold at least one video of each label."""
    counts = videos.group_by("label").agg(pl.col("group").n_unique()).sort("label")
    return dict(zip(counts["label"].to_list(), counts["group"].to_list(), strict=True))


def _check_enough_groups(videos: pl.DataFrame, k: int, n_test_splits: int, source: str) -> None:
    """Fail early, naming the numbers, when a label has too few groups for the test split and k folds."""
    per_label = _groups_per_label(videos)
    if sorted(per_label) != [0, 1]:
        raise FoldError(
            f"{source}: both labels (0 = real, 1 = fake) are needed, found only {sorted(per_label)}"
        )
    needed = k + (1 if n_test_splits else 0)
    short = {label: n for label, n in per_label.items() if n < needed}
    if short:
        test = " + 1 for the test set (test_fraction > 0)" if n_test_splits else ""
        raise FoldError(
            f"{source}: too few groups per label for k={k} folds{test}: need at least {needed} groups of "
            f"each label, have {per_label} (label: groups); lower folds.k or test_fraction, or add videos"
        )
    n_groups = videos["group"].n_unique()
    if n_test_splits and n_groups < n_test_splits:
        raise FoldError(
            f"{source}: test_fraction needs {n_test_splits} groups to split off a test set, have {n_groups}"
        )


def _splitter(n_splits: int, seed: int, name: str) -> StratifiedGroupKFold:
    """A shuffled StratifiedGroupKFold whose random_state is drawn from the base seed."""
    from sklearn.model_selection import StratifiedGroupKFold  # late: seconds of start-up for fold readers

    return StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=stable_seed(seed, name) % 2**32)


def _test_mask(videos: pl.DataFrame, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the held-out test videos: one split of a grouped, stratified K-fold whose size is about
    test_fraction of the groups (the complement of one split when test_fraction > 0.5)."""
    mask = np.zeros(videos.height, dtype=bool)
    if test_fraction <= 0:
        return mask
    labels, groups = videos["label"].to_numpy(), videos["group"].to_numpy()
    rest, held = next(
        _splitter(_n_test_splits(test_fraction), seed, "test").split(np.zeros(len(labels)), labels, groups)
    )
    mask[held if test_fraction <= 0.5 else rest] = True
    return mask


def _n_test_splits(test_fraction: float) -> int:
    """Splits of the test K-fold: one split holds about test_fraction (or 1 - test_fraction) of the groups."""
    if test_fraction <= 0:
        return 0
    return max(2, round(1 / min(test_fraction, 1 - test_fraction)))


def assign_folds(
    videos: pl.DataFrame, k: int, test_fraction: float, seed: int, source: str = "clips"
) -> pl.DataFrame:
    """folds.csv rows for `videos` (video_id, group, label): split `test` (fold -1) or `cv` (fold 0..k-1)."""
    if k < 2:
        raise FoldError(f"{source}: k must be at least 2, got {k}")
    if not 0 <= test_fraction < 1:
        raise FoldError(f"{source}: test_fraction must be in [0, 1), got {test_fraction}")
    _check_enough_groups(videos, k, _n_test_splits(test_fraction), source)
    test = _test_mask(videos, test_fraction, seed)
    fold = np.full(videos.height, -1, dtype=np.int64)
    cv_idx = np.flatnonzero(~test)
    cv = videos[cv_idx]
    _check_enough_groups(cv, k, 0, f"{source} (after the test split)")
    labels, groups = cv["label"].to_numpy(), cv["group"].to_numpy()
    for f, (_, val) in enumerate(_splitter(k, seed, "cv").split(np.zeros(len(cv_idx)), labels, groups)):
        fold[cv_idx[val]] = f
    out = videos.with_columns(split=pl.Series(np.where(test, "test", "cv")), fold=pl.Series(fold))
    _check_labels_in_every_split(out, k, source)
    return out.select(FOLDS_COLUMNS)


def _check_labels_in_every_split(folds: pl.DataFrame, k: int, source: str) -> None:
    """Every validation fold and the test set must hold both labels, or their metrics mean nothing."""
    parts = {f"fold {f}": folds.filter((pl.col("split") == "cv") & (pl.col("fold") == f)) for f in range(k)}
    if (folds["split"] == "test").any():
        parts["test set"] = folds.filter(pl.col("split") == "test")
    for name, part in parts.items():
        labels = sorted(set(part["label"].to_list()))
        if labels != [0, 1]:
            raise FoldError(
                f"{source}: {name} has labels {labels} only ({part.height} videos, "
                f"groups per label overall {_groups_per_label(folds)}); add groups or lower k"
            )


def make_folds(
    clips_csv: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    k: int,
    test_fraction: float,
    seed: int,
    memory_log: str | os.PathLike[str] | None = None,
) -> pl.DataFrame:
    """Write folds.csv (video_id,group,label,split,fold) for the videos of clips.csv, and return it.

    test_fraction 0 means no test set (every video is in a cv fold; infer then has nothing to predict)."""
    mem = MemoryLog(memory_log, "folds")
    mem.mark("start")
    videos = read_videos(clips_csv)
    folds = assign_folds(videos, k, test_fraction, seed, str(clips_csv))
    with atomic_path(out_csv) as tmp:
        folds.write_csv(tmp)
    counts = folds.group_by("split", "fold", "label").len().sort("split", "fold", "label")
    log.info("folds of %d videos (%d groups): %s", folds.height, folds["group"].n_unique(), counts.rows())
    if test_fraction <= 0:
        log.warning("test_fraction is 0: no held-out test set, inference has nothing to predict")
    mem.mark("end", videos=folds.height)
    return folds


def read_folds(folds_csv: str | os.PathLike[str]) -> pl.DataFrame:
    """folds.csv, typed."""
    return _read_csv(folds_csv, FOLDS_SCHEMA)


def _clips_with_folds(clips_csv: str | os.PathLike[str], folds_csv: str | os.PathLike[str]) -> pl.DataFrame:
    """Every clip with its video's split and fold; every clip's video must be in folds.csv."""
    clips = _read_csv(clips_csv, CLIPS_SCHEMA)
    folds = read_folds(folds_csv).select("video_id", "split", "fold")
    joined = clips.join(folds, left_on="original_video", right_on="video_id", how="left")
    orphans = joined.filter(pl.col("split").is_null())["original_video"].unique().sort()
    if orphans.len():
        raise FoldError(
            f"{folds_csv}: has no row for videos of {clips_csv}: {orphans.head(5).to_list()} "
            "(rerun the folds stage)"
        )
    return joined.sort("original_video", "aug_idx")


def fold_clips(
    clips_csv: str | os.PathLike[str], folds_csv: str | os.PathLike[str], fold: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, validation) clip rows of one fold: training = all clips (original and augmented) of the cv
    videos of the other folds; validation = the original clips (aug_idx 0) of this fold's videos."""
    clips = _clips_with_folds(clips_csv, folds_csv)
    cv = clips.filter(pl.col("split") == "cv")
    folds = sorted(cv["fold"].unique().to_list())
    if fold not in folds:
        raise FoldError(f"{folds_csv}: no fold {fold}; folds are {folds}")
    train = cv.filter(pl.col("fold") != fold)
    val = cv.filter((pl.col("fold") == fold) & (pl.col("aug_idx") == 0))
    return train, val


def held_out_clips(clips_csv: str | os.PathLike[str], folds_csv: str | os.PathLike[str]) -> pl.DataFrame:
    """The original clips (aug_idx 0) of the held-out test videos."""
    clips = _clips_with_folds(clips_csv, folds_csv)
    return clips.filter((pl.col("split") == "test") & (pl.col("aug_idx") == 0))
