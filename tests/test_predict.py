"""Scoring new videos: K clips spread over each video (decoded indices), `fvc predict` on folders with broken
files (rejected with the reason, the rest scored), and the same per-video result from `fvc predict` and the
workflow's `predict` target on demo videos re-encoded and rotated."""

from __future__ import annotations

import json
import os
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import polars as pl
import pytest
from infer_data import export_folds, write_test_videos
from video_factory import frame_index, make_video
from workflow_runner import BIN, snakemake

from fvc.cli import main
from fvc.infer.video_clips import WINDOW, centre_clip, clip_indices, read_video_clips


@pytest.mark.parametrize("frames", [9, 40, 301])
def test_clips_spread_over_the_video_and_the_centre_clip_is_k_1(frames):
    num_frames, k = 4, 5
    indices = clip_indices(frames, num_frames, k)
    assert indices.shape == (k, num_frames) and indices.min() >= 0 and indices.max() <= frames - 1
    assert np.all(np.diff(indices, axis=1) >= 0)  # each clip in time order
    assert np.all(np.diff(indices[:, 0]) >= 0) and indices[-1, 0] > indices[0, 0]  # later and later
    span = WINDOW * frames
    # The first window starts at the first frame, the last ends at the last frame.
    assert indices[0, 0] == int(span / (2 * num_frames)) and indices[-1, -1] >= frames - 1 - span / num_frames
    centre = indices[centre_clip(k)]
    np.testing.assert_array_equal(centre, clip_indices(frames, num_frames, 1)[0])
    middle = (frames - 1) / 2
    assert abs((centre[0] + centre[-1]) / 2 - middle) <= 1  # the centre clip sits on the video's middle


def test_even_clip_counts_have_no_centre_clip():
    with pytest.raises(ValueError, match="odd"):
        centre_clip(4)


@pytest.mark.parametrize("rotation", [0, 90])
def test_one_read_decodes_the_k_clips_at_their_indices_upright(tmp_path, rotation):
    path = make_video(tmp_path / "v.mp4", 60, size=(64, 64), gop=10, rotation=rotation)
    clips = read_video_clips(str(path), 4, 64, 3)
    assert clips.shape == (3, 4, 3, 64, 64)
    decoded = [[frame_index(frame.permute(1, 2, 0).numpy()) for frame in clip] for clip in clips]
    assert decoded == clip_indices(60, 4, 3).tolist()


def test_predict_scores_a_folder_and_lists_broken_files_with_their_reason(in_tmp_path, capsys):
    write_test_videos(in_tmp_path, videos=4, test=4)
    export_folds("naive_cnn", {"widths": [4]}, 4, 16, in_tmp_path / "models" / "naive_cnn", folds=2)
    export_folds("logistic_regression", {"pool": 4}, 4, 16, in_tmp_path / "models" / "lr", folds=2)
    (in_tmp_path / "videos" / "real" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x17" * 200)
    args = ["predict", "videos", "--export-dir", "models/naive_cnn", "--export-dir", "models/lr"]
    args += ["--device", "cpu", "--precision", "fp32", "--clips-per-video", "3", "--out-dir", "out"]
    assert main([*args, "--ensemble-models"]) == 0
    printed = capsys.readouterr().out
    table = pl.read_parquet("out/predictions.parquet")
    assert table.equals(pl.read_csv("out/predictions.csv"))
    videos = [f"videos/{name}/v{v}.mp4" for name, v in (("fake", 1), ("fake", 3), ("real", 0), ("real", 2))]
    assert sorted(set(table["video"])) == videos
    assert table["model"].unique(maintain_order=True).to_list() == [
        "naive_cnn",
        "logistic_regression",
        "ensemble",
    ]
    assert (
        set(table["clips"]) == {3}
        and table.filter(pl.col("model") == "ensemble")["folds"].to_list() == [4] * 4
    )
    wide = table.pivot(on="model", index="video", values="prob_fake")
    np.testing.assert_allclose(wide["ensemble"], (wide["naive_cnn"] + wide["logistic_regression"]) / 2)
    assert table["label"].to_list() == ["fake" if p >= 0.5 else "real" for p in table["prob_fake"]]
    [rejected] = pl.read_csv("out/rejected.csv").to_dicts()
    assert rejected["video"] == "videos/real/broken.mp4" and rejected["reason"]
    assert "broken.mp4" in printed and rejected["reason"] in printed
    assert all(v in printed for v in videos) and "ensemble" in printed

    (in_tmp_path / "only_broken").mkdir()
    (in_tmp_path / "only_broken" / "x.mp4").write_text("not a video")
    assert main(["predict", "only_broken", "--export-dir", "models/lr", "--out-dir", "none"]) == 1
    assert (
        "no video to score in only_broken: 1 rejected (reasons in none/rejected.csv)"
        in capsys.readouterr().err
    )
    assert main(["predict", "videos", "--models", "svm", "--out-dir", "none"]) == 1
    assert "no trained model for svm fold 0" in capsys.readouterr().err


def reencode_rotated(source: Path, dest: Path, rotation: int) -> Path:
    """`source` re-encoded (H.264, another quality) with its frames stored turned back by `rotation` and a
    display matrix saying so, as a phone records: displayed upright, it shows the same picture."""
    turns = rotation // 90 % 4
    with av.open(str(source)) as src, av.open(str(dest), mode="w") as out:
        frames = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
        stream = out.add_stream("libx264", rate=Fraction(25), options={"crf": "12", "preset": "veryfast"})
        height, width = frames[0].shape[:2]
        stream.width, stream.height = (height, width) if turns % 2 else (width, height)
        stream.pix_fmt = "yuv420p"
        stream.set_display_rotation(rotation)
        for rgb in frames:
            stored = np.ascontiguousarray(np.rot90(rgb, -turns))
            out.mux(stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")))
        out.mux(stream.encode(None))
    return dest


@pytest.mark.slow
def test_fvc_predict_and_the_workflow_target_agree_on_reencoded_rotated_videos(tiny_local_run: Path):
    """Demo videos the run never saw as these files (re-encoded, rotated 90 and 270 degrees) and a truncated
    one: `fvc predict` and `snakemake predict` give the same rows, and a rotated copy scores close to its
    original."""
    root = tiny_local_run
    new = root / "new_videos"
    new.mkdir()
    originals = sorted((root / "results" / "download" / "videos").rglob("*.mp4"))[:2]
    for n, source in enumerate(originals):
        reencode_rotated(source, new / f"turned{n}.mp4", (90, 270)[n])
        (new / f"original{n}.mp4").write_bytes(source.read_bytes())
    (new / "cut.mp4").write_bytes(originals[0].read_bytes()[: originals[0].stat().st_size // 3])
    forced = ["infer={precision: fp32, device: cpu}", "predict={videos: new_videos}"]
    result = snakemake(root, "--profile", "profiles/local", "predict", "--config", *forced)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    target = pl.read_parquet(root / "results" / "predict" / "predictions.parquet")
    exports = [
        a for m in ("logistic_regression", "naive_cnn") for a in ("--export-dir", f"results/models/{m}")
    ]
    cli = [str(BIN / "fvc"), "predict", "new_videos", *exports, "--out-dir", "cli_out"]
    cli += ["--precision", "fp32", "--device", "cpu"]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(cli, cwd=root, capture_output=True, text=True, env=env, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    by_cli = pl.read_parquet(root / "cli_out" / "predictions.parquet")
    assert by_cli.drop("prob_fake").equals(target.drop("prob_fake"))
    np.testing.assert_allclose(by_cli["prob_fake"], target["prob_fake"], atol=1e-6)
    assert target.height == 2 * 4  # 4 usable videos x 2 models
    rejected = pl.read_csv(root / "results" / "predict" / "rejected.csv")
    assert rejected["video"].to_list() == ["new_videos/cut.mp4"] and "truncated" in rejected["reason"][0]
    assert rejected.equals(pl.read_csv(root / "cli_out" / "rejected.csv"))
    for model in ("logistic_regression", "naive_cnn"):
        probs = dict(target.filter(pl.col("model") == model).select("video", "prob_fake").iter_rows())
        for n in range(2):
            assert abs(probs[f"new_videos/turned{n}.mp4"] - probs[f"new_videos/original{n}.mp4"]) < 0.05
    assert (root / "logs" / "benchmarks" / "predict" / "predict.tsv").is_file()
    marks = [json.loads(line)["point"] for line in (root / "logs/predict/predict.memory.jsonl").open()]
    assert marks[:2] == ["start", "indexed"] and marks[-1] == "end" and marks.count("load") == 4
    # The test videos were scored from K clips: metrics at K = 1 and K = 5 side by side.
    metrics = json.loads((root / "results" / "infer" / "naive_cnn" / "metrics.json").read_text())
    assert list(metrics["clips_per_video"]) == ["1", "5"]
    assert metrics["clips_per_video"]["5"]["auc"] == metrics["ensemble"]["auc"]
