"""Shards of the data stages: which shard job (download, index, augment) handles a video, and how many.

A video's shard comes from its id alone (a hash, not its row number), so adding videos to a manifest moves no
other video to another shard, and every shard count N gives the same per-video results; the merge job puts
the rows back in the input's order."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any


def shard_of(video_id: str, count: int) -> int:
    """The shard (0 .. count-1) that handles `video_id`: the first 8 bytes of its sha256, modulo `count`."""
    return int.from_bytes(hashlib.sha256(video_id.encode()).digest()[:8], "big") % count


def manifest_rows(paths: list[str]) -> int | None:
    """Data rows in the manifest files (lines less each header), or None while one does not exist yet."""
    total = 0
    for path in paths:
        try:
            with Path(path).open("rb") as f:
                total += max(sum(1 for line in f if line.strip()) - 1, 0)
        except FileNotFoundError:
            return None
    return total


def shard_count(config: dict[str, Any]) -> int:
    """`shards.count`, or for `auto` one shard per `shards.videos_per_shard` videos of the dataset (the demo's
    size, else the manifest rows; 1 while the manifest is still to be made)."""
    shards = config["shards"]
    if shards["count"] != "auto":
        return int(shards["count"])
    dataset = config["dataset"]
    if dataset["demo"]["enabled"]:
        videos: int | None = dataset["demo"]["videos"]
    else:
        manifest = dataset["manifest"]
        videos = manifest_rows([manifest] if isinstance(manifest, str) else list(manifest))
    return max(1, math.ceil((videos or 1) / shards["videos_per_shard"]))
