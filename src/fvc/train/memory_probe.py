"""The measured inputs of `fvc plan` (`fvc.slurm.plan`), each taken in a fresh interpreter and cached.

- `probe_model(spec, infer_batch)`: one model row. The child imports what a train job imports and records
  its peak RSS (the baseline), builds the model as training does (seeded, the row's gradient checkpointing,
  the row's CPUs as threads, freed memory kept as in training), counts the parameter bytes (all, trainable,
  largest tensor, inference's compute copy: `fvc.infer.precision`), then runs two training steps (forward,
  backward, AdamW step) on random clips of the row's frames and size, batch 1 then batch 3: the peak after
  the batch-1 step is baseline + weights + gradients + optimizer state + one sample's activations + the
  first step's workspace, and half the growth of the peak from batch 1 to batch 3 is one sample's
  activations (`benchmarks/plan_accuracy.py` checks the result against real training peaks). The probe runs
  on the CPU at the row's own shape (attention grows faster than linearly with size, so a probe at a smaller
  shape would not scale): a batch of 3 of one row costs a few seconds and at most its per-sample activations.
  The meta device allocates nothing, so it has no peak to read; the bytes autograd saves in a meta forward
  (`saved_tensors_hooks`) miss the backward's transients and views: at the demo rows they were 0.47x the
  measured growth per sample for x3d (7.7 vs 16.2 MB) and 1.1x for vit_gru (7.2 vs 6.5 MB), so no single
  factor fits; the CPU step is what the benchmark checks.
  Inference's need comes from the pre-flight's `Estimate` (`fvc.infer.preflight`) built from these bytes.
- `stage_baseline(modules)`: the peak RSS of a fresh interpreter that imports `modules` (comma-separated: a
  stage's imports).

Results are cached as JSON under `<results_dir>/plan/` by the content hash of what they depend on
(`fvc.slurm.plan.probe_key`), so `fvc plan` probes a row once and the Snakefile's check reads the cache only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fvc.core.atomic import write_text
from fvc.core.config import ModelSpec
from fvc.core.memory import MB, peak_rss_bytes

#: What a train job imports, by the end of its first epoch (the metrics import scikit-learn late).
TRAIN_IMPORTS = ("fvc.train.training", "sklearn.metrics")
#: Batch sizes of the probe's two training steps.
PROBE_BATCHES = (1, 3)


def _child(argv: list[str]) -> dict[str, Any]:
    """In the fresh interpreter: `baseline MODULE` or `model SPEC_JSON INFER_BATCH`."""
    kind = argv[0]
    if kind == "baseline":
        for module in argv[1].split(","):
            __import__(module)
        return {"baseline_mb": peak_rss_bytes() / MB}
    row = json.loads(argv[1])
    return _probe(ModelSpec(**row), int(argv[2]))


def _probe(spec: ModelSpec, infer_batch: int) -> dict[str, Any]:
    import torch

    from fvc.core.memory import reuse_freed_memory
    from fvc.models import build_model, scale_clips

    for module in TRAIN_IMPORTS:
        __import__(module)
    reuse_freed_memory()
    torch.set_num_threads(spec.cpus)
    baseline = peak_rss_bytes()
    torch.manual_seed(0)
    model = build_model(spec.name, spec.params, spec.num_frames, spec.size)
    model.set_gradient_checkpointing(spec.gradient_checkpointing)
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=spec.lr, weight_decay=0.01)
    model.train()
    peaks = []
    for batch in PROBE_BATCHES:
        clips = torch.randint(0, 256, (batch, spec.num_frames, 3, spec.size, spec.size), dtype=torch.uint8)
        labels = torch.randint(0, 2, (batch,)).float()
        loss = model.loss_fn(model(scale_clips(clips)), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del clips, labels, loss
        peaks.append(peak_rss_bytes())
    span = PROBE_BATCHES[1] - PROBE_BATCHES[0]
    from fvc.infer.precision import compute_copy_bytes  # after the peaks: no train job imports these
    from fvc.infer.preflight import ACTIVATION_FACTOR, Estimate

    infer = Estimate(
        baseline=0,
        weights=sum(p.numel() * 2 for p in params),
        largest_tensor=max((p.numel() * 2 for p in params), default=0),
        activations=infer_batch * spec.num_frames * 3 * spec.size**2 * 4 * ACTIVATION_FACTOR,
        compute_copy=compute_copy_bytes(model, torch.float32),
    )
    return {
        "baseline_mb": baseline / MB,
        "first_step_mb": peaks[0] / MB,
        "activations_per_sample_mb": max(peaks[1] - peaks[0], 0) / span / MB,
        "weights_mb": sum(p.numel() * p.element_size() for p in params) / MB,
        "trainable_mb": sum(p.numel() * p.element_size() for p in trainable) / MB,
        "infer_mb": infer.device_total / MB,
        "infer_terms": infer.describe().removesuffix(" + baseline 0 MB"),
    }


def _run_child(args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = subprocess.run(
        [sys.executable, "-m", "fvc.train.memory_probe", *args], capture_output=True, text=True, env=env
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory probe {args[:2]} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cached(path: Path, args: list[str]) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    result = _run_child(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(result, indent=1) + "\n")
    return result


def probe_model(spec: ModelSpec, infer_batch: int, cache: Path) -> dict[str, Any]:
    """The probe of one model row (see the module docstring), from `cache` when it was taken before."""
    return _cached(cache, ["model", json.dumps(asdict(spec)), str(infer_batch)])


def stage_baseline(modules: str, cache: Path) -> float:
    """Peak RSS (MB) of a fresh interpreter that imports `modules` (comma-separated), from `cache` when
    measured before."""
    return float(_cached(cache, ["baseline", modules])["baseline_mb"])


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1:])))
