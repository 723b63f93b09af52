"""Is a fetched file a video at all? Its Content-Type and leading bytes tell an HTML, JSON, XML or text
answer (a login wall, an error page, a playlist) or an empty file from a media container."""

from __future__ import annotations

from pathlib import Path

HEAD_BYTES = 4096
# (offset, magic, container): the leading bytes of the containers videos come in.
MAGIC = (
    (4, b"ftyp", "mp4/mov"),
    (4, b"moov", "mov"),
    (4, b"mdat", "mov"),
    (4, b"wide", "mov"),
    (4, b"free", "mov"),
    (0, b"\x1a\x45\xdf\xa3", "webm/mkv"),
    (0, b"FLV", "flv"),
    (0, b"OggS", "ogg"),
    (0, b"\x00\x00\x01\xba", "mpeg-ps"),
    (0, b"\x00\x00\x01\xb3", "mpeg-es"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "asf/wmv"),
)
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml", "application/javascript")


def container(head: bytes) -> str | None:
    """The container the leading bytes announce (None when none is recognised)."""
    for offset, magic, name in MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    if head[:4] == b"RIFF" and head[8:11] == b"AVI":
        return "avi"
    if head[:1] == b"\x47" and (len(head) < 189 or head[188:189] == b"\x47"):
        return "mpeg-ts"
    return None


def _kind_of_text(head: bytes) -> str | None:
    """'an HTML page', 'a JSON document', ... when the bytes are text (None for binary data)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the end of the head
            return None
        text = head[: exc.start].decode("utf-8")
    if any(ord(c) < 32 and c not in "\t\r\n\f" for c in text):
        return None
    lead = text.lstrip("\ufeff \t\r\n").lower()
    if lead.startswith(("<!doctype html", "<html", "<head", "<body")) or "<html" in lead[:1024]:
        return "an HTML page"
    if lead.startswith("<"):
        return "an XML document"
    if lead.startswith(("{", "[")):
        return "a JSON document"
    return "a text file"


def not_a_video(head: bytes, content_type: str | None = None) -> str | None:
    """Why a fetch whose answer starts with `head` (and came with `content_type`, when HTTP) is not a video;
    None when it may be one (a known container, or binary data the index will judge)."""
    if not head:
        return "empty file"
    if container(head):
        return None
    kind = _kind_of_text(head)
    media = (content_type or "").split(";")[0].strip().lower()
    if kind:
        return f"{kind}, not a video" + (f" (Content-Type {media})" if media else "")
    if media.startswith(TEXT_TYPES):
        return f"Content-Type {media}, not a video"
    return None


def check_file(path: str | Path, content_type: str | None = None) -> str | None:
    """not_a_video() of a file's leading bytes."""
    with open(path, "rb") as fh:
        return not_a_video(fh.read(HEAD_BYTES), content_type)
