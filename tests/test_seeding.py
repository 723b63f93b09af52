"""Stable seeds: the same across processes and PYTHONHASHSEED, different for different ids."""

from __future__ import annotations

import os
import subprocess
import sys

from fvc.core.seeding import stable_seed


def test_seed_is_stable_across_processes_and_hash_seeds() -> None:
    code = "from fvc.core.seeding import stable_seed; print(stable_seed(1234, 'fake/a.mp4', 2))"
    seeds = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": h},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for h in ("0", "1", "random")
    }
    assert seeds == {str(stable_seed(1234, "fake/a.mp4", 2))}


def test_seed_depends_on_every_part() -> None:
    base = stable_seed(1, "a", 0)
    assert len({base, stable_seed(2, "a", 0), stable_seed(1, "b", 0), stable_seed(1, "a", 1)}) == 4
    assert stable_seed(1, "ab", 0) != stable_seed(1, "a", "b0")
    assert 0 <= base < 2**63
