"""Manifest reading: the fvc format, the real FVC.csv format, and clear errors for bad rows."""

from __future__ import annotations

import pytest

from fvc.data.manifest import ManifestError, check_video_id, read_manifest

SHA = "ab" * 32


def write(tmp_path, text, name="manifest.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_fvc_format(tmp_path):
    path = write(
        tmp_path,
        (
            "video_id,url,label,group,sha256,size\n"
            f"fake/a.mp4,https://example.org/a.mp4,fake,g1,{SHA.upper()},123\n"
            "real/b.mp4,videos/b.mp4,0,g2,,\n"
            "\n"
            "c.mp4,data.tar.gz#x/c.mp4,REAL,g2,,7\n"
        ),
    )
    entries = read_manifest(path)
    assert [e.video_id for e in entries] == ["fake/a.mp4", "real/b.mp4", "c.mp4"]
    assert [e.label for e in entries] == [1, 0, 0]
    assert entries[0].sha256 == SHA and entries[0].size == 123
    assert entries[1].sha256 is None and entries[1].size is None
    assert entries[2].url == "data.tar.gz#x/c.mp4" and entries[2].group == "g2" and entries[2].line == 5


def test_fvc_csv_format(tmp_path):
    path = write(
        tmp_path,
        (
            "cascade_id,video_url,label,platform\n"
            "7,https://www.youtube.com/watch?v=dQw4w9WgXcQ,fake,youtube\n"
            "7,https://twitter.com/u/status/123/../../etc/passwd,fake,twitter\n"
            "9,https://www.youtube.com/watch?v=abc,real,youtube\n"
        ),
        "FVC.csv",
    )
    entries = read_manifest(path)
    assert [e.group for e in entries] == ["7", "7", "9"]
    assert [e.label for e in entries] == [1, 1, 0]
    assert all(e.sha256 is None and e.size is None for e in entries)
    assert entries[0].video_id.startswith("youtube.com_watch_v_dQw4w9WgXcQ_")
    for entry in entries:
        assert check_video_id(entry.video_id) is None, entry.video_id
        assert "/" not in entry.video_id and ".." not in entry.video_id
    assert len({e.video_id for e in entries}) == 3
    assert read_manifest(path)[0].video_id == entries[0].video_id  # stable


@pytest.mark.parametrize(
    ("row", "field", "needle"),
    [
        ("../x.mp4,u,real,g,,", "video_id", "'..'"),
        ("/abs/x.mp4,u,real,g,,", "video_id", "relative"),
        ("a//x.mp4,u,real,g,,", "video_id", "normalised"),
        ("x.mp4,u,maybe,g,,", "label", "unknown label 'maybe'"),
        ("x.mp4,u,real,g,xyz,", "sha256", "64 hex"),
        ("x.mp4,u,real,g,,-3", "size", "non-negative"),
        ("x.mp4,,real,g,,", "url", "empty"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, row, field, needle):
    path = write(tmp_path, f"video_id,url,label,group,sha256,size\nok.mp4,u,real,g,,\n{row}\n")
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    message = str(err.value)
    assert (
        str(path) in message and "line 3" in message and f"field {field!r}" in message and needle in message
    )


def test_missing_column_and_duplicates(tmp_path):
    path = write(tmp_path, "video_id,url,group\nx.mp4,u,g\n")
    with pytest.raises(ManifestError, match=r"line 1, field 'label': missing column"):
        read_manifest(path)
    path = write(tmp_path, "video_id,url,label,group\nx.mp4,u,1,g\nx.mp4,v,0,h\n")
    with pytest.raises(ManifestError, match=r"line 3, field 'video_id': 'x.mp4' duplicates line 2"):
        read_manifest(path)
    path = write(tmp_path, "cascade_id,label\n1,fake\n", "FVC.csv")
    with pytest.raises(ManifestError, match=r"FVC.csv: line 1, field 'video_url'"):
        read_manifest(path)
    with pytest.raises(ManifestError, match="cannot read"):
        read_manifest(tmp_path / "absent.csv")
