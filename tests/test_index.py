"""The index sees real-world files as a person does: upright sizes, the main stream, damage in the middle,
stills and too-short videos; and an index with nothing left is an error that says where the reasons are."""

from __future__ import annotations

import av
import polars as pl
import pytest
from video_factory import damage_frame, make_still, make_two_stream_video, make_video

from fvc.data.index import EmptyIndexError, ProbeError, build_index, probe_video


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_rotation_and_displayed_size_are_recorded(tmp_path, rotation):
    path = make_video(tmp_path / "phone.mp4", 12, size=(64, 48), rotation=rotation)
    info = probe_video(path)
    assert (info.rotation, info.width, info.height) == (rotation, 64, 48)


def test_the_main_stream_is_probed(tmp_path):
    info = probe_video(make_two_stream_video(tmp_path / "two.mp4", 12, main=1))
    assert (info.stream, info.width, info.height, info.frames) == (1, 64, 48, 12)


@pytest.mark.parametrize(
    ("packet", "how"), [(50, "flagged corrupt"), (55, "Invalid data found")]
)  # fmt: skip
def test_damage_in_the_middle_is_found_with_one_open(tmp_path, monkeypatch, packet, how):
    path = make_video(tmp_path / "v.mp4", 100, size=(128, 96), gop=10, bframes=2)
    assert probe_video(path).frames == 100
    # Packets of the GOP 50-59 that holds the middle check frame (57): its keyframe, whose damage the decoder
    # conceals but flags, and a later one, whose damage it refuses.
    damage_frame(path, packet)
    opened = []
    real = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: opened.append(a[0]) or real(*a, **k))
    with pytest.raises(ProbeError, match=rf"damaged: decoding frames \[0, 14, .*, 99\] failed \(.*{how}"):
        probe_video(path)
    assert len(opened) <= 2, "one open, and one more only for the sequential fallback"


@pytest.mark.parametrize("codec", ["png", "mjpeg"])
def test_still_images_renamed_mp4_are_rejected(tmp_path, codec):
    with pytest.raises(ProbeError, match=r"still image \((png|jpeg)_pipe, .*\), not a video"):
        probe_video(make_still(tmp_path / "photo.mp4", codec))


def test_videos_shorter_than_a_clip_are_rejected_or_flagged(tmp_path):
    path = make_video(tmp_path / "two.mp4", 2)
    with pytest.raises(ProbeError, match=r"too short: 2 frames, fewer than index.min_frames \(8\)"):
        probe_video(path, min_frames=8, clip_frames=8)
    info = probe_video(path, min_frames=2, clip_frames=8)
    assert info.frames == 2 and info.short
    assert not probe_video(make_video(tmp_path / "eight.mp4", 8), clip_frames=8).short


@pytest.mark.usefixtures("in_tmp_path")
def test_an_index_with_every_video_rejected_is_an_error_naming_rejected_csv(tmp_path):
    make_still("photo.mp4")
    (tmp_path / "page.mp4").write_text("<!doctype html><html><body>video</body></html>\n" * 20)
    make_video("short.mp4", 2)
    rows = [("a", "photo.mp4", 1, "g"), ("b", "page.mp4", 0, "g"), ("c", "short.mp4", 0, "h")]
    pl.DataFrame(rows, schema=["video_id", "path", "label", "group"], orient="row").write_csv("videos.csv")
    pl.DataFrame({"video_id": ["d", "e"], "reason": ["404", "410"]}).write_csv("failed.csv")
    with pytest.raises(EmptyIndexError) as caught:
        build_index("videos.csv", "i.parquet", "i.csv", "rejected.csv", download_failed="failed.csv")
    message = str(caught.value)
    assert "index rejected every one of the 3 videos of videos.csv" in message
    assert (
        "1 still image" in message and "1 not a readable media file" in message and "1 too short" in message
    )
    assert "reasons in rejected.csv" in message and "download failed 2 more entries" in message
    assert pl.read_csv("rejected.csv")["video_id"].to_list() == ["a", "b", "c"]
    assert not (tmp_path / "i.parquet").exists()
    build_index("videos.csv", "i.parquet", "i.csv", "rejected.csv", min_frames=2)
    index = pl.read_parquet("i.parquet")
    assert index["video_id"].to_list() == ["c"] and index["short"].to_list() == [True]
