"""Stable seeds from ids: the same on every run, process and PYTHONHASHSEED (never Python's hash())."""

from __future__ import annotations

import hashlib


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from the blake2b digest of the parts' text, joined unambiguously."""
    text = "\x1f".join(str(part) for part in parts)
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1
