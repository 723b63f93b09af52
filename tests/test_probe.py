"""The index stage: probe without decoding, reject every kind of bad file with its reason, and go on."""

from __future__ import annotations

import json
import shutil

import av
import polars as pl
import pytest
from video_factory import make_audio, make_video

from fvc.cli import main
from fvc.data.index import INDEX_SCHEMA, ProbeError, build_index, probe_video
from fvc.data.video import read_frames


def test_sample_videos_probe_like_a_full_demux(sample_videos):
    for path in sample_videos.values():
        info = probe_video(path)
        with av.open(str(path)) as container:
            packets = sum(1 for p in container.demux(video=0) if p.size)
        assert info.frames == packets
        assert info.codec == "h264" and info.size == path.stat().st_size
    bunny = probe_video(sample_videos["bigbuckbunny.mp4"])
    assert (bunny.width, bunny.height, bunny.fps, bunny.frames) == (1280, 720, 25.0, 132)
    assert bunny.duration == pytest.approx(5.28)


def test_webm_and_mkv_without_frame_count_count_packets(tmp_path):
    for name, codec in (("v.webm", "libvpx-vp9"), ("v.mkv", "libx264")):
        path = make_video(tmp_path / name, 30, fps=15, gop=10, codec=codec)
        with av.open(str(path)) as container:
            assert container.streams.video[0].frames == 0
        info = probe_video(path)
        assert (info.frames, info.fps) == (30, 15.0)
        assert info.duration == pytest.approx(2.0)
        read_frames(path, [info.frames - 1])  # the estimate promises no frame that is not there


def test_stream_without_duration_counts_packets(tmp_path):
    path = make_video(tmp_path / "live.webm", 17, gop=5, codec="libvpx-vp9", streamed=True)
    info = probe_video(path)
    assert info.frames == 17


@pytest.mark.parametrize("name", ["v.mp4", "v.mkv", "v.webm", "faststart.mp4"])
def test_truncated_files_are_rejected(tmp_path, name):
    codec = "libvpx-vp9" if name.endswith("webm") else "libx264"
    path = make_video(tmp_path / name, 50, gop=10, codec=codec)
    if name == "faststart.mp4":  # index (moov) first, so the header survives the cut
        fast = tmp_path / "fast.mp4"
        with av.open(str(path)) as src, av.open(str(fast), "w", options={"movflags": "faststart"}) as dst:
            out = dst.add_stream_from_template(src.streams.video[0])
            for packet in src.demux(video=0):
                if packet.dts is not None:
                    packet.stream = out
                    dst.mux(packet)
        fast.replace(path)
    assert probe_video(path).frames == 50
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(ProbeError, match="truncated"):
        probe_video(path)


def test_other_bad_files_are_rejected_with_reasons(tmp_path):
    (tmp_path / "empty.mp4").touch()
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    make_audio(tmp_path / "tone.m4a")
    make_video(tmp_path / "noframes.mp4", 0)
    cases = {
        "missing.mp4": "missing file",
        "empty.mp4": r"empty file \(0 bytes\)",
        "notes.mp4": "not a readable media file",
        "tone.m4a": r"no video stream \(streams: audio\)",
        "noframes.mp4": "no video stream",
    }
    for name, reason in cases.items():
        with pytest.raises(ProbeError, match=reason):
            probe_video(tmp_path / name)


@pytest.mark.usefixtures("in_tmp_path")
def test_build_index_writes_index_and_rejected_and_goes_on(tmp_path, sample_videos):
    videos = tmp_path / "download" / "videos"
    videos.mkdir(parents=True)
    shutil.copy(sample_videos["bikes.mp4"], videos / "bikes.mp4")
    make_video(videos / "clip.webm", 20, codec="libvpx-vp9")
    make_audio(videos / "tone.m4a")
    (videos / "broken.mp4").write_bytes(b"\x00" * 1000)
    rows = [
        ("real/bikes.mp4", "download/videos/bikes.mp4", 0, "g1"),
        ("fake/clip.webm", "download/videos/clip.webm", 1, "007"),
        ("fake/tone.m4a", "download/videos/tone.m4a", 1, "g2"),
        ("real/broken.mp4", "download/videos/broken.mp4", 0, "g3"),
        ("real/gone.mp4", "download/videos/gone.mp4", 0, "g3"),
    ]
    table = pl.DataFrame(rows, schema=["video_id", "path", "label", "group"], orient="row")
    table.with_columns(sha256=pl.lit("0" * 64), size=pl.lit(1)).write_csv("download/videos.csv")

    report = build_index(
        "download/videos.csv", "index/i.parquet", "index/i.csv", "index/rejected.csv", "mem.jsonl"
    )

    assert (report.indexed, report.rejected) == (2, 3)
    index = pl.read_parquet("index/i.parquet")
    assert index.schema == pl.Schema(INDEX_SCHEMA)
    assert index["video_id"].to_list() == ["real/bikes.mp4", "fake/clip.webm"]
    assert index["group"].to_list() == ["g1", "007"], "groups stay strings"
    assert index["frames"].to_list() == [250, 20]
    assert pl.read_csv("index/i.csv", schema=INDEX_SCHEMA).equals(index)
    rejected = pl.read_csv("index/rejected.csv")
    assert rejected.columns == ["video_id", "path", "reason"]
    reasons = dict(zip(rejected["video_id"], rejected["reason"], strict=True))
    assert reasons["fake/tone.m4a"].startswith("no video stream")
    assert reasons["real/broken.mp4"].startswith("not a readable media file")
    assert reasons["real/gone.mp4"] == "missing file"
    marks = [json.loads(line) for line in open("mem.jsonl")]
    assert [m["point"] for m in marks] == ["start"] + ["video"] * 5 + ["end"]
    assert all(m["stage"] == "index" and m["rss_mb"] > 0 for m in marks)


@pytest.mark.usefixtures("in_tmp_path")
def test_cli_and_bad_videos_csv(tmp_path, sample_videos, capsys):
    pl.DataFrame(
        {"video_id": ["a.mp4"], "path": [str(sample_videos["bikes.mp4"])], "label": [1], "group": ["g"]}
    ).write_csv("videos.csv")
    assert main(["index", "--videos", "videos.csv", "--out-dir", "out"]) == 0
    assert "indexed 1 videos, rejected 0" in capsys.readouterr().out
    assert pl.read_csv("out/video_index.csv")["frames"].to_list() == [250]
    pl.DataFrame({"video_id": ["a.mp4"], "path": ["x"]}).write_csv("bad.csv")
    with pytest.raises(ValueError, match=r"bad\.csv: missing columns \['label', 'group'\]"):
        build_index("bad.csv", "o.parquet", "o.csv", "r.csv")
