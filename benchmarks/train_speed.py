"""Training speed per model at its config.yaml row: fvc's `train_fold` beside a bare loop, fp32 and bf16.

Both train the same model (the row's batch split and gradient checkpointing, AdamW, the loss averaged over
each optimizer step's clips) on the same clips (demo-like: `--videos` videos x 3 clips, fold 0) for
`--epochs` epochs, in `--repeats` pairs of fresh processes (one thread each) that run in lockstep
(`benchmarks/fresh.py`): fvc's epoch e, then the bare loop's epoch e, then fvc's epoch e+1, ..., one
process running at a time. The ratio is the median over every pair of epochs after the first (the first
pays one-time costs) of bare seconds / fvc seconds: each pair is timed within seconds, so a change in the
machine's speed (on this VM the same loop ran 0.6-1.6x as fast from one minute to the next) falls on both.
A small model gets more clips (`--min-seconds` per epoch) and its row's `mem_mb` is raised where needed so
fvc keeps them in memory, like the bare loop. Like with like: the same section is timed in both, the
training pass (fvc: the `_train_epoch` call; bare: its `for` loop), and the bare `peer` does, untimed, the
work fvc must do around its steps: a new order every epoch (a gather per batch) and, after each epoch, a
validation pass with the same metrics and an fsynced checkpoint. That work matters to the steps: it leaves
the caches cold, and measured, it slows the next epoch of a bare loop over logistic_regression's 3 ms epoch by
1-2 ms. The `strict` column is the bare loop without it (file order, epochs back to back); `epoch` is fvc's
whole epoch with its validation. A last case runs `auto` and shows what it chose.
Target: fvc / peer >= 0.85 at every row.
Run: `.venv/bin/python benchmarks/train_speed.py [--models a b] [--precisions fp32 bf16] [--repeats N]`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from statistics import median
from typing import Any

from fresh import run_fresh, run_lockstep, turn
from setups import ROOT, training_set

from fvc.clips.folds import fold_clips

TARGET = 0.85


def _spec(case: dict[str, Any]) -> Any:
    from fvc.core.config import ModelSpec

    return ModelSpec(**{**case["spec"], "epochs": case["epochs"]})


def model_and_optimizer(spec: Any) -> tuple[Any, Any]:
    """The row's model in training mode (its gradient checkpointing) and AdamW over its trainable part."""
    import torch

    from fvc.models import build_model

    model = build_model(spec.name, spec.params, spec.num_frames, spec.size)
    model.set_gradient_checkpointing(spec.gradient_checkpointing)
    model.train()
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.lr)


def step_seconds(spec: Any) -> float:
    """Seconds of one warm fp32 training step (forward, backward, AdamW) of the row's model and batch on
    random clips, one thread: the fastest of 5."""
    import torch

    torch.set_num_threads(1)
    model, opt = model_and_optimizer(spec)
    clips = torch.rand(spec.batch_size, spec.num_frames, 3, spec.size, spec.size)
    labels = torch.zeros(spec.batch_size)
    times = []
    for _ in range(6):
        start = time.perf_counter()
        model.loss_fn(model(clips), labels).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return min(times[1:])


def preloading(spec: Any, clips: int) -> dict[str, Any]:
    """The row, with its `mem_mb` raised where `clips` would not fit fvc's preload share: the target compares
    loops over clips already in memory (a larger set read from files each epoch is another case)."""
    import torch

    from fvc.train.loader import MB, PRELOAD_SHARE, preload_bytes, preload_dtype

    row = asdict(spec)
    if preload_dtype(spec, clips, torch.device("cpu")) is None:
        row["mem_mb"] = math.ceil(preload_bytes(spec, clips, torch.float32) / PRELOAD_SHARE / MB) + 1
    return row


def _ratios(runs: list[tuple[dict[str, Any], dict[str, Any]]], key: str) -> list[float]:
    """Per pair of lockstep epochs after the first: the bare loop's seconds / fvc's, by `key` (wall or
    thread CPU time)."""
    return [b / f for fvc, bare in runs for f, b in zip(fvc[key][1:], bare[key][1:], strict=True)]


def fvc_case(case: dict[str, Any]) -> dict[str, Any]:
    """`train_fold` in `case['precision']`: its training passes (`_train_epoch`, timed around the call by
    wall and CPU clock, the section the bare loop times) and its epochs with their validation (the metrics'
    history, less the time spent waiting for the turn)."""
    from fvc.train import training

    out = Path(case["out"])
    wall: list[float] = []
    cpu: list[float] = []
    waits: list[float] = []
    train_epoch = training._train_epoch

    def timed(*args: Any, **kwargs: Any) -> float:
        waited = time.perf_counter()
        turn()
        waits.append(time.perf_counter() - waited)
        t0, c0 = time.perf_counter(), time.thread_time()
        loss = train_epoch(*args, **kwargs)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        return loss

    training._train_epoch = timed
    kwargs = {} if case.get("probe_share") is None else {"probe_share": case["probe_share"]}
    metrics = training.train_fold(
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
    clips = metrics["train_clips"]
    epochs = [h["seconds"] - w for h, w in zip(metrics["history"], waits, strict=True)]
    return {
        "clips": clips,
        "wall": wall,
        "cpu": cpu,
        "epoch_clips_per_s": clips / min(epochs[1:] or epochs),
        "precision": metrics["precision"],
    }


def bare_case(case: dict[str, Any]) -> dict[str, Any]:
    """Two bare loops over the same training clips held in memory as scaled float32, epochs interleaved,
    each with a model of its own. `peer` does what fvc does around its steps, untimed: a new order every
    epoch (`torch.randperm`, each batch gathered with `index_select`) and after every epoch a validation
    pass with the same metrics (`binary_metrics`, scikit-learn) and a checkpoint of model and optimizer
    written and fsynced (this work leaves the caches cold for the next epoch's steps: measured, it slows a
    3 ms logistic_regression epoch of the bare loop by 1-2 ms). `strict` walks the clips in file order
    through views, epochs back to back (no gather, no validation: the old comparison)."""
    import numpy as np
    import torch

    from fvc.clips.dataset import load_clip_tensor
    from fvc.clips.folds import fold_clips
    from fvc.core.metrics import binary_metrics
    from fvc.core.precision import autocast

    spec = _spec(case)
    device = torch.device("cpu")

    def load(rows: Any) -> tuple[torch.Tensor, torch.Tensor]:
        clips = [
            load_clip_tensor(Path(case["root"]) / p, spec.num_frames, spec.size) for p in rows["clip_path"]
        ]
        return torch.stack(clips).float() / 255, torch.tensor(rows["label"].to_list(), dtype=torch.float32)

    train_rows, val_rows = fold_clips(case["clips"], case["folds"], 0)
    (clips, labels), (val_clips, val_labels) = load(train_rows), load(val_rows)
    b, n = spec.batch_size, len(labels)
    torch.manual_seed(0)

    def strict() -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(clips[i : i + b], labels[i : i + b]) for i in range(0, n, b)]

    def shuffled() -> Any:
        order = torch.randperm(n)
        for i in range(0, n, b):
            index = order[i : i + b]
            yield clips.index_select(0, index), labels.index_select(0, index)

    def validate_and_save(model: Any, opt: Any, path: Path) -> None:
        model.eval()
        with torch.no_grad(), autocast(case["precision"], device):
            logits = torch.cat([model(val_clips[i : i + b]).float() for i in range(0, len(val_labels), b)])
        binary_metrics(val_labels.numpy(), np.asarray(torch.sigmoid(logits)))
        model.train()
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, path)
        with path.open("rb+") as fh:
            os.fsync(fh.fileno())

    loops = {}
    for name, batches in (("peer", shuffled), ("strict", strict)):
        model, opt = model_and_optimizer(spec)
        loops[name] = (model, opt, batches, [], [])
    steps = -(-n // b)
    Path(case["out"]).mkdir(parents=True, exist_ok=True)
    for epoch in range(spec.epochs):
        turn()
        for name, (model, opt, batches, wall, cpu) in loops.items():
            if name == "peer" and epoch > 0:  # the last epoch's validation, just before its own next epoch
                validate_and_save(model, opt, Path(case["out"]) / "bare.pt")
            t0, c0 = time.perf_counter(), time.thread_time()
            for i, (x, y) in enumerate(batches()):
                with autocast(case["precision"], device):
                    logits = model(x)
                loss = model.loss_fn(logits, y) / spec.grad_accum_steps
                loss.backward()
                if (i + 1) % spec.grad_accum_steps == 0 or i + 1 == steps:
                    opt.step()
                    opt.zero_grad(set_to_none=True)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
    return {name: {"clips": n, "wall": wall, "cpu": cpu} for name, (*_, wall, cpu) in loops.items()}


def _best_rate(runs: list[dict[str, Any]]) -> float:
    """Clips/s of the fastest epoch after the first over `runs`."""
    return max(run["clips"] / min(run["wall"][1:] or run["wall"]) for run in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--precisions", nargs="*", default=["fp32", "bf16"])
    parser.add_argument("--videos", type=int, default=12, help="demo-like videos, 3 clips each (demo: 24)")
    parser.add_argument(
        "--min-steps",
        type=int,
        default=30,
        help="more videos for a model whose epoch would have fewer training batches (a 3-batch epoch "
        "measures cold caches after validation, not the loop)",
    )
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=0.3,
        help="more videos for a model whose fp32 epoch would take less (timed here on one warm step): a "
        "30 ms epoch is as much timer and cache noise as loop",
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="fresh fvc / bare lockstep pairs per row")
    parser.add_argument(
        "--probe-share", type=float, default=None, help="auto's probe share (default: fvc's own)"
    )
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        _, specs, small = training_set(args.config, Path(tmp) / "data", args.videos)
        per_video = fold_clips(small["clips"], small["folds"], 0)[0].height / args.videos  # training clips
        clips_per_video = len(Path(small["clips"]).read_text().splitlines()[1:]) / args.videos
        datasets = {args.videos: small}
        print(
            f"{'model':<20} {'prec':<5} {'fvc':>8} {'bare':>8} {'ratio':>6} {'range':>10} {'cpu':>6} "
            f"{'strict':>6} {'epoch':>8} {'e-ratio':>7}",
            flush=True,
        )
        for name in args.models or list(specs):
            steps = max(args.min_steps, math.ceil(args.min_seconds / step_seconds(specs[name])))
            videos = max(args.videos, math.ceil(steps * specs[name].batch_size / per_video))
            if videos not in datasets:
                datasets[videos] = training_set(args.config, Path(tmp) / f"data{videos}", videos)[2]
            base = {"spec": preloading(specs[name], videos * clips_per_video), "epochs": args.epochs}
            base |= datasets[videos]
            for precision in args.precisions:
                pairs = []
                for repeat in range(args.repeats):
                    case = {**base, "precision": precision, "out": f"{tmp}/{name}-{precision}-{repeat}"}
                    ran = run_lockstep(
                        {"fvc": ("train_speed:fvc_case", case), "bare": ("train_speed:bare_case", case)},
                        threads=1,
                    )
                    pairs.append((ran["fvc"], ran["bare"]))
                fvc = [f for f, _ in pairs]
                peer = [(f, b["peer"]) for f, b in pairs]
                ratios = _ratios(peer, "wall")
                ratio = median(ratios)
                ok &= ratio >= TARGET
                cpu = median(_ratios(peer, "cpu"))
                strict = median(_ratios([(f, b["strict"]) for f, b in pairs], "wall"))
                bare_rate = _best_rate([b for _, b in peer])
                epoch = max(f["epoch_clips_per_s"] for f in fvc)
                spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
                print(
                    f"{name:<20} {precision:<5} {_best_rate(fvc):>8.1f} {bare_rate:>8.1f} {ratio:>6.2f} "
                    f"{spread:>10} {cpu:>6.2f} {strict:>6.2f} {epoch:>8.1f} {epoch / bare_rate:>7.2f}",
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
    print(
        f"\nfvc, bare: clips/s of the fastest of epochs 2..{args.epochs} over {args.repeats} lockstep "
        f"pair(s) of fresh processes, each model on at least {args.videos} videos, {args.min_steps} "
        f"training batches and {args.min_seconds} s (fp32, estimated) per epoch. fvc: its training pass; "
        "bare: a bare loop doing fvc's work around its steps untimed (shuffle, validation, checkpoint). "
        "ratio: median over the pairs of lockstep epochs 2.. of bare seconds / fvc seconds by wall clock "
        "(range: lowest-highest pair); cpu: the same by thread CPU time; strict: the same against a bare "
        "loop in file order, epochs back to back (no gather, no validation); epoch: fvc's whole epoch incl. "
        "its validation (clips/s); e-ratio = epoch / bare."
    )
    print(f"target: ratio >= {TARGET} at every row and precision")
    print("VERDICT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
