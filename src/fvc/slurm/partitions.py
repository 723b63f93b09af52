"""SLURM partitions by kind of work: `cpu` (data stages, the audit, CPU models) and `gpu` (models with
gpus > 0), each from its environment variable, else config.yaml's `slurm` section, else the one partition of
the profile (FVC_SLURM_PARTITION, SLURM_PARTITION, `debug`: the test cluster's)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

DEFAULT_PARTITION = "debug"


def partition(config: Mapping, kind: Literal["cpu", "gpu"], env: Mapping[str, str] = os.environ) -> str:
    """The partition of `kind` work."""
    return (
        env.get(f"FVC_SLURM_{kind.upper()}_PARTITION")
        or (config.get("slurm") or {}).get(f"{kind}_partition")
        or env.get("FVC_SLURM_PARTITION")
        or env.get("SLURM_PARTITION")
        or DEFAULT_PARTITION
    )
