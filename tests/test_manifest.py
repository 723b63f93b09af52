"""Manifest reading: the fvc format, the real FVC.csv format, lists of manifests, the label map, and clear
errors for bad rows."""

from __future__ import annotations

import pytest

from fvc.data.manifest import ManifestError, check_video_id, read_manifest, read_manifests

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
        ("x.mp4,u,maybe,g,,", "label", "label 'maybe' is not in dataset.labels"),
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


FVC_ROWS = (
    "cascade_id,video_url,label\n"
    "c1,https://www.youtube.com/watch?v=AAA,fake\n"
    "c1,https://www.facebook.com/p/videos/1/,debunked\n"
    "c2,https://twitter.com/u/status/2,real\n"
    "c3,https://www.youtube.com/watch?v=BBB,uncertain\n"
    "c4,https://www.youtube.com/watch?v=CCC,Parody\n"
)


def test_default_label_map_drops_uncertain_and_parody(tmp_path):
    manifest = read_manifests(write(tmp_path, FVC_ROWS, "FVC_dup.csv"))
    assert [(e.group, e.label, e.label_name) for e in manifest.entries] == [
        ("c1", 1, "fake"),
        ("c1", 1, "debunked"),
        ("c2", 0, "real"),
    ]
    assert manifest.dropped == {"uncertain": 1, "parody": 1}


def test_label_map_is_editable_and_an_unmapped_label_names_file_row_and_label(tmp_path):
    path = write(tmp_path, FVC_ROWS, "FVC_dup.csv")
    labels = {"fake": 1, "real": 0, "debunked": None, "uncertain": 1, "parody": 0}
    entries = read_manifest(path, labels)
    assert [(e.group, e.label) for e in entries] == [("c1", 1), ("c2", 0), ("c3", 1), ("c4", 0)]
    with pytest.raises(ManifestError) as err:
        read_manifest(path, {"fake": 1, "real": 0, "uncertain": None, "parody": None})
    message = str(err.value)
    assert message == (
        f"{path}: line 3, field 'label': label 'debunked' is not in dataset.labels "
        "(fake, parody, real, uncertain, 0, 1)"
    )


def test_list_of_manifests_and_the_same_url_twice_is_one_video(tmp_path):
    first = write(
        tmp_path, "cascade_id,video_url,label\nc1,https://www.youtube.com/watch?v=AAA,fake\n", "FVC.csv"
    )
    dup = write(tmp_path, FVC_ROWS + "c1,https://www.youtube.com/watch?v=AAA,fake\n", "FVC_dup.csv")
    manifest = read_manifests([first, dup])
    urls = [e.url for e in manifest.entries]
    assert urls == [
        "https://www.youtube.com/watch?v=AAA",
        "https://www.facebook.com/p/videos/1/",
        "https://twitter.com/u/status/2",
    ]
    assert manifest.repeats == 2
    assert [e.manifest for e in manifest.entries] == [str(first), str(dup), str(dup)]
    assert read_manifests(str(first)).entries == manifest.entries[:1]
    with pytest.raises(ManifestError, match="empty list"):
        read_manifests([])


def test_a_manifest_with_only_dropped_labels_says_so(tmp_path):
    path = write(tmp_path, "cascade_id,video_url,label\nc1,https://x.org/v,parody\n", "FVC_dup.csv")
    with pytest.raises(ManifestError, match=r"no entries \(1 rows dropped by dataset.labels\)"):
        read_manifests(path)
