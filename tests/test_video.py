"""Sparse decoding must return exactly the frames a plain sequential decode numbers, pixel for pixel."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from video_factory import decode_all, frame_index, make_two_stream_video, make_video

from fvc.data import video
from fvc.data.video import VideoReadError, decode_frames, frame_table, read_frames


def assert_matches(path, indices, reference, size=None, threads=video.DECODE_THREADS):
    """read_frames(indices) equals the reference decode row by row, without any fallback."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got, stats = decode_frames(path, indices, size, threads)
    assert got.dtype == np.uint8 and got.shape == (len(indices), *reference[indices[0]].shape)
    for row, i in enumerate(indices):
        assert np.array_equal(got[row], reference[i]), f"{path.name}: row {row} (frame {i}) differs"
    assert not stats.sequential_fallback
    return stats


@pytest.mark.parametrize("name", ["bigbuckbunny.mp4", "bikes.mp4"])
def test_sample_videos_match_sequential_decode(sample_videos, name):
    path = sample_videos[name]
    n = len(frame_table(path))
    rng = np.random.default_rng(5)
    requests = ([n - 1, 0, n // 2, n // 2, 1], sorted(rng.integers(0, n, 6)), list(rng.integers(0, n, 6)))
    reference = decode_all(path, keep={i for r in requests for i in r})
    assert len(reference) == len({i for r in requests for i in r})
    for indices in requests:
        assert_matches(path, indices, reference)


def test_bikes_seeks_between_keyframes_instead_of_decoding_everything(sample_videos):
    path = sample_videos["bikes.mp4"]
    table = frame_table(path)
    keys = np.searchsorted(table.pts, table.keyframes)
    assert len(keys) > 3
    target = int(keys[-1]) + 2  # two frames after the last keyframe
    _, stats = decode_frames(path, [target])
    assert stats.seeks == 1 and stats.frames_decoded == 3


VIDEOS = {
    "gop1.mp4": {"gop": 1},
    "gop7_b2.mp4": {"gop": 7, "bframes": 2},
    "gop30_b3.mp4": {"gop": 30, "bframes": 3},
    "long_gop.mp4": {"gop": 300, "bframes": 2},
    "vfr_b3.mp4": {"gop": 10, "bframes": 3, "vfr": True},
    "vfr.mkv": {"gop": 9, "bframes": 2, "vfr": True},
    "h264_b2.mkv": {"gop": 8, "bframes": 2},
    "vp9.webm": {"gop": 10, "codec": "libvpx-vp9"},
    "mpeg4_b2.avi": {"gop": 10, "bframes": 2, "codec": "mpeg4"},
}


@pytest.mark.parametrize("name", sorted(VIDEOS))
def test_synthetic_videos_match_sequential_decode(tmp_path, name):
    path = make_video(tmp_path / name, 45, **VIDEOS[name])
    reference = decode_all(path)
    assert [frame_index(f) for f in reference] == list(range(45))
    rng = np.random.default_rng(len(name))
    for indices in ([44, 0, 22, 22], sorted(rng.integers(0, 45, 6)), list(rng.integers(0, 45, 6))):
        assert_matches(path, indices, reference)


@pytest.mark.parametrize("threads", [1, 3])
def test_every_decoder_thread_count_returns_the_same_frames(tmp_path, sample_videos, threads, monkeypatch):
    paths = (make_video(tmp_path / "b3.mp4", 45, gop=30, bframes=3), sample_videos["bikes.mp4"])
    requests = {path: [len(frame_table(path)) - 1, 3, len(frame_table(path)) // 2, 0] for path in paths}
    references = {path: decode_all(path, keep=set(indices)) for path, indices in requests.items()}
    counts = []
    real_open = video.VideoReader._open

    def spy(reader):
        real_open(reader)
        counts.append(reader.stream.codec_context.thread_count)

    monkeypatch.setattr(video.VideoReader, "_open", spy)
    for path, indices in requests.items():
        assert_matches(path, indices, references[path], threads=threads)
    assert counts and set(counts) == {threads}


def test_a_given_frame_table_is_used_instead_of_demuxing_again(tmp_path, monkeypatch):
    path = make_video(tmp_path / "b2.mp4", 40, gop=9, bframes=2)
    table, indices = frame_table(path), [37, 2, 20]
    expected = read_frames(path, indices)
    monkeypatch.setattr(video.VideoReader, "_demux_table", lambda *_: pytest.fail("demuxed again"))
    assert np.array_equal(read_frames(path, indices, table=table), expected)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_decoder_threads_must_be_a_positive_count(tmp_path, threads):
    path = make_video(tmp_path / "v.mp4", 5, size=(32, 16))
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        read_frames(path, [0], threads=threads)


def test_webm_reports_no_frame_count_but_indices_still_map(tmp_path):
    path = make_video(tmp_path / "v.webm", 30, gop=10, codec="libvpx-vp9")
    import av

    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0
    assert len(frame_table(path)) == 30
    assert [frame_index(f) for f in read_frames(path, [29, 13, 0])] == [29, 13, 0]


@pytest.mark.parametrize("size", [32, (40, 24)])
def test_resize_on_the_fly_matches_resized_reference(tmp_path, size):
    path = make_video(tmp_path / "v.mp4", 30, size=(96, 64), gop=10, bframes=2)
    wh = (size, size) if isinstance(size, int) else size
    got = read_frames(path, [3, 17, 29], size=size)
    assert got.shape == (3, wh[1], wh[0], 3)
    assert_matches(path, [3, 17, 29], decode_all(path, wh), size=size)
    assert [frame_index(f) for f in got] == [3, 17, 29]


def test_frames_decoded_stays_near_the_preceding_keyframe(tmp_path):
    path = make_video(tmp_path / "v.mp4", 60, gop=10, bframes=2)
    _, stats = decode_frames(path, [25])
    assert stats.seeks == 1 and stats.frames_decoded <= 6 + 3  # 20..25, plus frames the decoder had queued
    _, stats = decode_frames(path, [21, 22, 23])
    assert stats.seeks == 1, "targets within one GOP need a single seek"
    _, stats = decode_frames(path, [5, 45])
    assert stats.seeks == 1 and stats.frames_decoded < 20


def test_index_out_of_range_names_file_index_and_count(tmp_path):
    path = make_video(tmp_path / "short.mkv", 12, gop=5)
    with pytest.raises(IndexError, match=r"short\.mkv.*index 12 .*12 frames"):
        read_frames(path, [0, 12])
    with pytest.raises(IndexError, match="index -1"):
        read_frames(path, [-1])


def test_empty_request_and_bad_files(tmp_path):
    path = make_video(tmp_path / "v.mp4", 5, size=(32, 16))
    assert read_frames(path, []).shape == (0, 16, 32, 3)
    with pytest.raises(VideoReadError, match="no such file"):
        read_frames(tmp_path / "missing.mp4", [0])
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 20)
    with pytest.raises(VideoReadError, match="notes.mp4"):
        read_frames(text, [0])
    with pytest.raises(TypeError):
        read_frames(path, [0.5])


def test_stream_without_timestamps_falls_back_to_sequential_decode(tmp_path):
    path = make_video(tmp_path / "raw.h264", 30, gop=10, bframes=2, container="h264")
    with pytest.warns(RuntimeWarning, match="decoding sequentially up to frame 29"):
        got, stats = decode_frames(path, [29, 3, 3])
    assert stats.sequential_fallback and stats.frames_decoded == 30
    assert [frame_index(f) for f in got] == [29, 3, 3]
    with pytest.warns(RuntimeWarning), pytest.raises(IndexError, match="has 30 frames"):
        read_frames(path, [30])


def test_seek_that_lands_past_the_target_falls_back(tmp_path, monkeypatch):
    path = make_video(tmp_path / "v.mp4", 40, gop=10, bframes=2)
    reference = decode_all(path)
    real = video.VideoReader._frames_from

    def overshooting(reader, seek_pts):
        return real(reader, None if seek_pts is None else seek_pts + 15 * 512)

    monkeypatch.setattr(video.VideoReader, "_frames_from", overshooting)
    with pytest.warns(RuntimeWarning, match="past target"):
        got, stats = decode_frames(path, [12, 33])
    assert stats.sequential_fallback
    assert np.array_equal(got[0], reference[12]) and np.array_equal(got[1], reference[33])


def test_memory_grows_with_frames_asked_not_video_length(tmp_path):
    path = make_video(tmp_path / "v.mp4", 150, size=(160, 120), gop=150)
    frame_bytes = 160 * 120 * 3
    tracemalloc.start()
    try:
        read_frames(path, [1, 149])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * frame_bytes, f"peak {peak} B for 2 frames of {frame_bytes} B"


def ffmpeg_frames(path, count, width, height):
    """Every frame as the ffmpeg CLI shows it (it applies the display matrix), as RGB [count, H, W, 3]."""
    import subprocess

    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo"]
    raw = subprocess.run([*cmd, "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(count, height, width, 3)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_phone_videos_come_out_upright(tmp_path, rotation):
    path = make_video(tmp_path / f"r{rotation}.mp4", 20, size=(64, 48), gop=6, bframes=2, rotation=rotation)
    with video.open_video(path) as reader:
        got = reader.read([17, 2, 9])
        assert reader.rotation == rotation
        assert reader.read([]).shape == (0, 48, 64, 3), "an empty read has the displayed shape too"
    assert got.shape == (3, 48, 64, 3) and [frame_index(f) for f in got] == [17, 2, 9]
    shown = ffmpeg_frames(path, 20, 64, 48)
    assert all(np.array_equal(got[row], shown[i]) for row, i in enumerate([17, 2, 9])), "as ffmpeg shows it"
    resized = read_frames(path, [5], size=(40, 24))
    assert resized.shape == (1, 24, 40, 3) and frame_index(resized[0]) == 5, "size is the displayed size"


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("default_second.mp4", {"main": 1}), ("default_second.mkv", {"main": 1}),
     ("no_default_larger_second.mkv", {"main": 1, "default": False})],
)  # fmt: skip
def test_the_main_stream_is_read_not_the_first(tmp_path, name, kwargs):
    path = make_two_stream_video(tmp_path / name, 12, **kwargs)
    with video.open_video(path) as reader:
        assert reader.stream.index == 1 and reader.frames == 12
        assert [frame_index(f) for f in reader.read([11, 0, 6])] == [11, 0, 6]
    assert frame_table(path) is not None and len(frame_table(path)) == 12


def test_h264_with_bframes_in_avi_decodes_no_frame_past_the_last_asked(tmp_path):
    # AVI has no presentation timestamps: decoded B-frame pts disagree with the packets' from frame 1 on.
    path = make_video(tmp_path / "b2.avi", 164, gop=30, bframes=2)
    indices = np.linspace(0, 120, 8).round().astype(int)
    with pytest.warns(RuntimeWarning, match="numbering frames by count up to frame 120"):
        got, stats = decode_frames(path, indices)
    assert [frame_index(f) for f in got] == indices.tolist()
    assert stats.sequential_fallback and stats.frames_decoded == 121


def count_opens(monkeypatch):
    """Wrap av.open by a counter; returns the list of paths opened."""
    import av

    opened = []
    real = av.open

    def counting(target, *args, **kwargs):
        opened.append(target)
        return real(target, *args, **kwargs)

    monkeypatch.setattr(av, "open", counting)
    return opened


def test_one_decode_call_opens_the_file_once(tmp_path, monkeypatch):
    path = make_video(tmp_path / "v.mp4", 40, gop=9, bframes=2)
    table = frame_table(path)
    opened = count_opens(monkeypatch)
    read_frames(path, [37, 2, 20])
    assert len(opened) == 1, "demuxing the table and decoding share one open"
    read_frames(path, [37, 2, 20], table=table, size=16)
    assert len(opened) == 2
    with video.open_video(path) as reader:  # a video's clips: one open for all of them
        for indices in ([0, 10, 20], [39, 5], [33, 34, 35], [1]):
            assert [frame_index(f) for f in reader.read(indices, size=32)] == indices
    assert len(opened) == 3 and reader.opens == 1


def to_ndarray_reference(path, size):
    """Every frame as `to_ndarray(format="rgb24", width, height)` converts it (a new conversion context each
    frame), turned upright: the bytes a reader's one reused context must reproduce."""
    import av

    with av.open(str(path)) as container:
        frames = []
        for frame in container.decode(video=0):
            turns = video.quarter_turns(frame.rotation)
            width, height = size if turns % 2 == 0 else size[::-1]
            frames.append(np.rot90(frame.to_ndarray(format="rgb24", width=width, height=height), turns))
    return frames


def test_one_conversion_context_per_reader_gives_to_ndarray_bytes(tmp_path, sample_videos, monkeypatch):
    """A reader converts every frame through one reused context (also across reads at other sizes), byte for
    byte as a fresh `to_ndarray(width, height)` per frame: sample videos and rotated phone videos."""
    made, real = [], video.VideoReformatter
    monkeypatch.setattr(video, "VideoReformatter", lambda: made.append(real()) or made[-1])
    paths = [sample_videos["bikes.mp4"], sample_videos["bigbuckbunny.mp4"]] + [
        make_video(tmp_path / f"r{r}.mp4", 24, size=(96, 64), gop=7, bframes=2, rotation=r) for r in (90, 270)
    ]
    for path in paths:
        sizes = [(64, 64), (48, 36), (128, 96)]
        references = {size: to_ndarray_reference(path, size) for size in sizes}
        count = len(references[sizes[0]])
        rng = np.random.default_rng(3)
        before = len(made)
        with video.open_video(path) as reader:
            for size in sizes * 2:
                indices = sorted(rng.choice(count, 6, replace=False).tolist())
                got = reader.read(indices, size=size)
                for row, i in enumerate(indices):
                    assert np.array_equal(got[row], references[size][i]), f"{path.name} {size} frame {i}"
        assert len(made) - before == 1, f"{path.name}: one conversion context for all of its reads"
