"""Training speed per model at its config.yaml row: fvc's `train_fold` beside a bare loop, fp32 and bf16.

Both train the same model (same seed, the row's batch split and gradient checkpointing) on the same clips
(demo-like: `--videos` videos x 3 clips of 8 x 64 x 64, fold 0) for `--epochs` epochs and report the BEST
epoch's training clips/s after the first (the first pays one-time costs; the best of several is the figure
least disturbed by other work on a shared machine). The bare loop holds its clips in memory as float
batches already scaled to [0, 1] and runs `for clips, labels in batches: loss.backward(); opt.step()` (an
optimizer step every `grad_accum_steps` batches, as fvc). fvc's figure is the training pass of its epoch;
`epoch` adds its validation and checkpoint. A last case runs `auto` and shows what it chose. Each case runs
in a fresh interpreter (`benchmarks/fresh.py`), one thread. Target: fvc / bare >= 0.85 at every row.
Run: `.venv/bin/python benchmarks/train_speed.py [--models a b] [--precisions fp32 bf16] [--videos N]`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fresh import run_fresh
from setups import ROOT, training_set

TARGET = 0.85


def _spec(case: dict[str, Any]) -> Any:
    from fvc.core.config import ModelSpec

    return ModelSpec(**{**case["spec"], "epochs": case["epochs"]})


def fvc_case(case: dict[str, Any]) -> dict[str, Any]:
    """`train_fold` in `case['precision']`; the last epoch's training-pass and whole-epoch clips/s."""
    from fvc.train.training import train_fold

    out = Path(case["out"])
    kwargs = {} if case.get("probe_share") is None else {"probe_share": case["probe_share"]}
    metrics = train_fold(
        case["clips"],
        case["folds"],
        0,
        _spec(case),
        out / "metrics.json",
        out / "fold0.safetensors",
        out / "ckpt",
        device="cpu",
        seed=0,
        precision=case["precision"],
        root=case["root"],
        **kwargs,
    )
    later = metrics["history"][1:] or metrics["history"]
    return {
        "clips_per_s": max(h["clips_per_s"] for h in later),
        "epoch_clips_per_s": metrics["train_clips"] / min(h["seconds"] for h in later),
        "precision": metrics["precision"],
    }


def bare_case(case: dict[str, Any]) -> dict[str, Any]:
    """A bare loop over the same training clips, held in memory as scaled float batches."""
    import torch

    from fvc.clips.dataset import load_clip_tensor
    from fvc.clips.folds import fold_clips
    from fvc.core.precision import autocast
    from fvc.models import build_model

    spec = _spec(case)
    rows, _ = fold_clips(case["clips"], case["folds"], 0)
    clips = torch.stack(
        [load_clip_tensor(Path(case["root"]) / p, spec.num_frames, spec.size) for p in rows["clip_path"]]
    )
    clips = clips.float() / 255
    labels = torch.tensor(rows["label"].to_list(), dtype=torch.float32)
    b = spec.batch_size
    batches = [(clips[i : i + b], labels[i : i + b]) for i in range(0, len(labels), b)]
    torch.manual_seed(0)
    model = build_model(spec.name, spec.params, spec.num_frames, spec.size)
    model.set_gradient_checkpointing(spec.gradient_checkpointing)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.lr)
    device = torch.device("cpu")
    seconds = []
    for _ in range(spec.epochs):
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(batches):
            with autocast(case["precision"], device):
                logits = model(x)
            loss = model.loss_fn(logits, y) / spec.grad_accum_steps
            loss.backward()
            if (i + 1) % spec.grad_accum_steps == 0 or i + 1 == len(batches):
                opt.step()
                opt.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - t0)
    return {"clips_per_s": len(labels) / min(seconds[1:] or seconds)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--precisions", nargs="*", default=["fp32", "bf16"])
    parser.add_argument("--videos", type=int, default=12, help="demo-like videos, 3 clips each (demo: 24)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--probe-share", type=float, default=None, help="auto's probe share (default: fvc's own)"
    )
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        _, specs, data = training_set(args.config, Path(tmp) / "data", args.videos)
        print(
            f"{'model':<20} {'prec':<5} {'fvc':>8} {'bare':>8} {'ratio':>6} {'epoch':>8}  "
            f"(clips/s; epoch = fvc incl. validation + checkpoint)",
            flush=True,
        )
        for name in args.models or list(specs):
            base = {"spec": asdict(specs[name]), "epochs": args.epochs, **data}
            for precision in args.precisions:
                case = {**base, "precision": precision, "out": f"{tmp}/{name}-{precision}"}
                fvc = run_fresh("train_speed:fvc_case", case, threads=1)
                bare = run_fresh("train_speed:bare_case", case, threads=1)
                ratio = fvc["clips_per_s"] / bare["clips_per_s"]
                ok &= ratio >= TARGET
                print(
                    f"{name:<20} {precision:<5} {fvc['clips_per_s']:>8.1f} {bare['clips_per_s']:>8.1f} "
                    f"{ratio:>6.2f} {fvc['epoch_clips_per_s']:>8.1f}",
                    flush=True,
                )
            auto = {
                **base,
                "epochs": specs[name].epochs,
                "precision": "auto",
                "probe_share": args.probe_share,
                "out": f"{tmp}/{name}-auto",
            }
            chosen = run_fresh("train_speed:fvc_case", auto, threads=1)["precision"]
            figures = ", ".join(
                f["precision"]
                + ("" if f["seconds_per_step"] is None else f" {f['seconds_per_step']:.4f} s/step")
                + ("" if f["deviation"] is None else f" dev {f['deviation']:.2g}")
                + (f" ({f['rejected']})" if f["rejected"] else "")
                for f in chosen["probe"]
            )
            print(f"{name:<20} auto -> {chosen['chosen']}: {figures}", flush=True)
    print(f"\ntarget: fvc / bare >= {TARGET} at every row and precision (best of epochs 2..{args.epochs})")
    print("VERDICT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
