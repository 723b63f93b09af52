"""Safe extraction: tar/zip slip, absolute paths, links, devices and fifos are refused before any write."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile

import pytest

from fvc.data.archive import UnsafeArchiveError, member_problems, safe_extract


def make_tar(path, members):
    """members: (name, kind, payload-or-linkname) with kind in file, dir, sym, hard, fifo, chr."""
    types = {
        "dir": tarfile.DIRTYPE,
        "sym": tarfile.SYMTYPE,
        "hard": tarfile.LNKTYPE,
        "fifo": tarfile.FIFOTYPE,
        "chr": tarfile.CHRTYPE,
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = types[kind]
            if kind in ("sym", "hard"):
                info.linkname = payload
            tar.addfile(info)
    return path


def test_extracts_regular_members(tmp_path):
    archive = make_tar(
        tmp_path / "ok.tar.gz", [("a/x.mp4", "file", b"x" * 10), ("a", "dir", None), ("b.mp4", "file", b"bb")]
    )
    dest = tmp_path / "out"
    written = safe_extract(archive, dest)
    assert sorted(p.relative_to(dest).as_posix() for p in written) == ["a/x.mp4", "b.mp4"]
    assert (dest / "a/x.mp4").read_bytes() == b"x" * 10
    assert safe_extract(archive, tmp_path / "only", ["b.mp4"]) == [tmp_path / "only/b.mp4"]
    assert not (tmp_path / "only/a").exists()


@pytest.mark.parametrize(
    ("member", "needle"),
    [
        (("../evil.mp4", "file", b"evil"), "escapes"),
        (("a/../../evil.mp4", "file", b"evil"), "escapes"),
        (("/tmp/evil_abs.mp4", "file", b"evil"), "absolute"),
        (("link.mp4", "sym", "/etc/passwd"), "link to '/etc/passwd'"),
        (("hard.mp4", "hard", "b.mp4"), "link to 'b.mp4'"),
        (("fifo.mp4", "fifo", None), "fifo"),
        (("dev.mp4", "chr", None), "device"),
    ],
)
def test_tar_refuses_unsafe_members(tmp_path, member, needle):
    archive = make_tar(tmp_path / "bad.tar.gz", [("b.mp4", "file", b"good"), member])
    dest = tmp_path / "sub" / "out"
    with pytest.raises(UnsafeArchiveError, match=needle):
        safe_extract(archive, dest)
    assert not dest.exists(), "nothing may be written when a member is refused"
    assert not (tmp_path / "evil.mp4").exists() and not (tmp_path / "sub" / "evil.mp4").exists()
    assert set(member_problems(archive)) == {member[0]}
    assert safe_extract(archive, dest, ["b.mp4"]) == [dest / "b.mp4"]  # the safe member alone is fine


def test_zip_slip_and_symlink_refused(tmp_path):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.mp4", b"ok")
        zf.writestr("../evil.mp4", b"evil")
        link = zipfile.ZipInfo("link.mp4")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    assert member_problems(archive) == {
        "../evil.mp4": "path escapes the target folder ('..')",
        "link.mp4": "symbolic link",
    }
    with pytest.raises(UnsafeArchiveError, match="evil"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.mp4").exists()
    assert (safe_extract(archive, tmp_path / "out", ["ok.mp4"])[0]).read_bytes() == b"ok"


def test_missing_member_and_not_an_archive(tmp_path):
    archive = make_tar(tmp_path / "ok.tar.gz", [("b.mp4", "file", b"b")])
    assert member_problems(archive, ["nope.mp4"]) == {"nope.mp4": "not in the archive"}
    with pytest.raises(UnsafeArchiveError, match="nope.mp4"):
        safe_extract(archive, tmp_path / "out", ["nope.mp4"])
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive at all")
    with pytest.raises(UnsafeArchiveError, match="not a tar or zip"):
        safe_extract(junk, tmp_path / "out")
