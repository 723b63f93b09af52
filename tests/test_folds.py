"""Folds: grouped, stratified, deterministic; validation and test see only original clips."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from fvc.cli import main
from fvc.clips import folds
from fvc.clips.folds import FoldError, fold_clips, make_folds

CLIP_COLUMNS = (
    "clip_path",
    "label",
    "group",
    "original_video",
    "aug_idx",
    "seed",
    "num_frames",
    "height",
    "width",
)

ROOT = Path(__file__).resolve().parents[1]


def write_clips(
    path: Path, groups: int, videos_per_group: int = 2, augs: int = 2, mixed: bool = False
) -> Path:
    """A clips.csv of `groups` groups, half real, half fake (or one real + fakes per group when `mixed`);
    group names are zero-padded digits, to catch a reader that turns them into integers."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CLIP_COLUMNS)
        for g in range(groups):
            for v in range(videos_per_group):
                label = (v > 0) if mixed else g % 2
                video = f"{'fake' if label else 'real'}/g{g:03d}_v{v}.mp4"
                for a in range(augs + 1):
                    writer.writerow(
                        [
                            f"clips/{video}.aug{a}.safetensors",
                            int(label),
                            f"{g:03d}",
                            video,
                            a,
                            1000 + a,
                            8,
                            64,
                            64,
                        ]
                    )
    return path


@pytest.fixture
def clips_csv(tmp_path: Path) -> Path:
    return write_clips(tmp_path / "clips.csv", groups=20)


def test_groups_never_straddle_splits_and_labels_are_stratified(tmp_path: Path, clips_csv: Path) -> None:
    out = make_folds(clips_csv, tmp_path / "folds.csv", k=3, test_fraction=0.25, seed=1)
    table = pl.read_csv(tmp_path / "folds.csv", schema_overrides={"group": pl.String})
    assert table.columns == ["video_id", "group", "label", "split", "fold"]
    assert table.equals(out)
    assert table["group"].str.len_chars().min() == 3  # "007" stays a string
    # Each group sits in exactly one (split, fold).
    per_group = table.group_by("group").agg(pl.struct("split", "fold").n_unique().alias("n"))
    assert per_group["n"].max() == 1
    # About a quarter of the groups are held out; every part has both labels in about equal numbers.
    test = table.filter(pl.col("split") == "test")
    assert 4 <= test["group"].n_unique() <= 6
    assert set(table.filter(pl.col("split") == "cv")["fold"]) == {0, 1, 2}
    assert set(test["fold"]) == {-1}
    for _, part in table.group_by("split", "fold"):
        counts = part["label"].value_counts()
        assert set(counts["label"]) == {0, 1}
        assert counts["count"].max() - counts["count"].min() <= 2


def test_fold_clips_train_and_validation(tmp_path: Path, clips_csv: Path) -> None:
    folds_csv = tmp_path / "folds.csv"
    table = make_folds(clips_csv, folds_csv, k=3, test_fraction=0.25, seed=1)
    test_rows = folds.held_out_clips(clips_csv, folds_csv)
    test_groups = set(test_rows["group"])
    assert set(test_rows["aug_idx"]) == {0}
    assert set(test_rows["original_video"]) == set(table.filter(pl.col("split") == "test")["video_id"])
    seen_val: set[str] = set()
    for fold in range(3):
        train, val = fold_clips(clips_csv, folds_csv, fold)
        assert set(val["aug_idx"]) == {0}
        assert set(train["aug_idx"]) == {0, 1, 2}  # original + augmented clips
        assert not set(train["group"]) & set(val["group"])
        assert not (set(train["group"]) | set(val["group"])) & test_groups
        # Every training video brings all its clips; every validation video exactly one.
        assert train.group_by("original_video").len()["len"].unique().to_list() == [3]
        assert val["original_video"].is_unique().all()
        assert set(val["label"]) == {0, 1} and set(train["label"]) == {0, 1}
        seen_val |= set(val["original_video"])
    # The validation sets cover every cv video once.
    assert seen_val == set(table.filter(pl.col("split") == "cv")["video_id"])
    with pytest.raises(FoldError, match="no fold 3"):
        fold_clips(clips_csv, folds_csv, 3)


def test_mixed_label_groups_stay_together(tmp_path: Path) -> None:
    clips_csv = write_clips(tmp_path / "clips.csv", groups=16, videos_per_group=3, mixed=True)
    table = make_folds(clips_csv, tmp_path / "folds.csv", k=3, test_fraction=0.2, seed=5)
    assert table.group_by("group").agg(pl.col("fold").n_unique())["fold"].max() == 1
    assert table.height == 48


@pytest.mark.slow
def test_deterministic_across_processes_and_seed_sensitive(tmp_path: Path, clips_csv: Path) -> None:
    make_folds(clips_csv, tmp_path / "a.csv", k=3, test_fraction=0.25, seed=1)
    code = (
        "from fvc.clips.folds import make_folds; "
        f"make_folds({str(clips_csv)!r}, {str(tmp_path / 'b.csv')!r}, k=3, test_fraction=0.25, seed=1)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    # Row order of clips.csv does not matter.
    lines = clips_csv.read_text().splitlines()
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    make_folds(shuffled, tmp_path / "c.csv", k=3, test_fraction=0.25, seed=1)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "c.csv").read_bytes()
    make_folds(clips_csv, tmp_path / "d.csv", k=3, test_fraction=0.25, seed=2)
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "d.csv").read_bytes()


def test_no_test_set(tmp_path: Path, clips_csv: Path) -> None:
    table = make_folds(clips_csv, tmp_path / "folds.csv", k=4, test_fraction=0, seed=1)
    assert set(table["split"]) == {"cv"} and set(table["fold"]) == {0, 1, 2, 3}
    assert folds.held_out_clips(clips_csv, tmp_path / "folds.csv").height == 0


def test_too_few_groups_names_the_numbers(tmp_path: Path) -> None:
    clips_csv = write_clips(tmp_path / "clips.csv", groups=6)  # 3 groups per label
    with pytest.raises(FoldError, match=r"need at least 4 groups of each label, have \{0: 3, 1: 3\}"):
        make_folds(clips_csv, tmp_path / "folds.csv", k=3, test_fraction=0.25, seed=1)
    assert not (tmp_path / "folds.csv").exists()
    make_folds(clips_csv, tmp_path / "folds.csv", k=3, test_fraction=0, seed=1)  # enough without a test set


def test_bad_inputs(tmp_path: Path, clips_csv: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("clip_path,label\nx,1\n")
    with pytest.raises(FoldError, match=r"bad.csv: missing columns"):
        make_folds(bad, tmp_path / "folds.csv", k=3, test_fraction=0.25, seed=1)
    one_label = tmp_path / "one.csv"
    lines = clips_csv.read_text().splitlines()
    one_label.write_text("\n".join([lines[0], *(line for line in lines[1:] if line.split(",")[1] == "1")]))
    with pytest.raises(FoldError, match=r"both labels .* found only \[1\]"):
        make_folds(one_label, tmp_path / "folds.csv", k=3, test_fraction=0.25, seed=1)
    folds_csv = tmp_path / "folds.csv"
    make_folds(clips_csv, folds_csv, k=3, test_fraction=0.25, seed=1)
    extra = tmp_path / "extra.csv"
    extra.write_text(clips_csv.read_text() + "clips/new.aug0.safetensors,1,999,new.mp4,0,1,8,64,64\n")
    with pytest.raises(FoldError, match=r"no row for videos .*new.mp4"):
        fold_clips(extra, folds_csv, 0)


def test_command_takes_k_from_the_config_and_a_flag_overrides_it(
    tmp_path: Path, clips_csv: Path, capsys: pytest.CaptureFixture
) -> None:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["folds"]["k"] = 2
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    base = ["folds", "--config", str(tmp_path / "config.yaml"), "--clips", str(clips_csv), "--out-dir"]

    def cv_folds(out: str) -> list[int]:
        table = pl.read_csv(tmp_path / out / "folds.csv")
        return sorted(table.filter(pl.col("split") == "cv")["fold"].unique().to_list())

    assert main([*base, str(tmp_path / "a")]) == 0 and cv_folds("a") == [0, 1]
    assert main([*base, str(tmp_path / "b"), "--k", "3"]) == 0 and cv_folds("b") == [0, 1, 2]
    capsys.readouterr()
    assert main([*base, str(tmp_path / "c"), "--k", "20"]) == 1
    assert capsys.readouterr().err.startswith("fvc folds: ")
