"""Start-up: each stage's module imports, in a fresh interpreter, only the heavy libraries that stage uses at
once; the others (scikit-learn, transformers, matplotlib, kornia, and torch outside training and inference)
are imported where they are used, so a job does not pay seconds for them before its work starts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "sklearn", "scipy", "transformers", "matplotlib", "kornia", "av", "polars", "pandas")
ALLOWED = {
    "fvc.cli": set(),  # `fvc --help` and argument parsing
    "fvc.data.download": set(),
    "fvc.data.index": {"av", "polars"},
    "fvc.clips.augment": {"av", "polars"},  # torch and kornia at the first augmented clip
    "fvc.clips.folds": {"polars"},  # scikit-learn when the folds are split
    "fvc.train.training": {"torch", "polars"},  # transformers when a ViT model is built
    "fvc.infer.inference": {"torch", "polars", "av"},  # decodes the test videos
    "fvc.slurm.audit": {"polars"},  # matplotlib when the plots are drawn
}


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_stage_imports_only_what_it_uses_at_once(module: str) -> None:
    code = f"import sys, json, {module}; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True).stdout)
    assert set(loaded) <= ALLOWED[module], f"{module} pulls in {sorted(set(loaded) - ALLOWED[module])}"
