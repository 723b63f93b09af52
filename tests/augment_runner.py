"""Run the augment stage as the workflow lays it out (paths relative to a work folder), for the tests."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from fvc.clips.augment import AugmentReport, augment_all

ARGS = {"num_frames": 8, "size": 32, "num_augmentations": 2, "seed": 1234, "decode_threads": 2}


def augment_in(workdir: Path, index: Path, **overrides: Any) -> AugmentReport:
    """augment_all over `index` into `workdir`/out, run from `workdir`; `overrides` replace or add to ARGS."""
    with contextlib.chdir(workdir):
        return augment_all(
            index,
            "out/clips.csv",
            "out/rejected.csv",
            "out/clips",
            "out/clips.partial.csv",
            **{**ARGS, **overrides},
        )
