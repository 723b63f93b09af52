"""Training of one (model, fold): mixed precision, gradient accumulation, optional gradient checkpointing,
epoch checkpoints a killed job resumes from, per-epoch metrics, and the best weights exported as fp16.

Determinism: shuffling uses a local `torch.Generator` seeded per epoch with `stable_seed(seed, model, fold,
epoch)`. Module initialisers and dropout only draw from torch's global generator, so the whole run sits inside
`torch.random.fork_rng` (the caller's RNG state is restored afterwards), seeded from `stable_seed`, and that
state is saved in every checkpoint and restored on resume. The best epoch is the one with the lowest
validation loss (defined even when a small validation fold has one class, unlike AUC).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Sized
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import polars as pl
import torch
from torch.utils.data import DataLoader

from fvc.clips.dataset import ClipDataset
from fvc.clips.folds import fold_clips
from fvc.core.config import ModelSpec
from fvc.core.devices import resolve_device
from fvc.core.memory import MemoryLog
from fvc.core.metrics import binary_metrics
from fvc.core.progress import progress
from fvc.core.seeding import stable_seed
from fvc.models import ClipClassifier, build_model, check_trainable, export_config, scale_clips
from fvc.train import checkpoint
from fvc.weights.export import export_fp16

log = logging.getLogger(__name__)


@contextmanager
def _autocast(device: torch.device) -> Iterator[None]:
    """bf16 autocast on CPU, fp16 on CUDA."""
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def _trainable_state(model: ClipClassifier) -> dict[str, torch.Tensor]:
    """What changes in training: trainable parameters and all buffers (frozen weights come from the build)."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k in trainable or k not in frozen}


def _load_trainable(model: ClipClassifier, tensors: dict[str, torch.Tensor], source: str) -> None:
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    if unexpected or set(missing) - frozen:
        raise ValueError(
            f"{source}: does not match the model (missing {sorted(set(missing) - frozen)[:5]}, "
            f"unexpected {unexpected[:5]}); delete the checkpoint folder to start over"
        )


def _rng_tensors(device: torch.device) -> dict[str, torch.Tensor]:
    rng = {"rng.cpu": torch.get_rng_state()}
    if device.type == "cuda":
        rng["rng.cuda"] = torch.cuda.get_rng_state(device)
    return rng


def _spec_key(spec: ModelSpec, fold: int, seed: int) -> dict[str, Any]:
    """What a checkpoint must match to be resumed."""
    return {
        "model": spec.name,
        "fold": fold,
        "seed": seed,
        "batch_size": spec.batch_size,
        "grad_accum_steps": spec.grad_accum_steps,
        "num_frames": spec.num_frames,
        "size": spec.size,
        "lr": spec.lr,
        "params": spec.params,
    }


def _train_epoch(
    model: ClipClassifier,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    accum: int,
    desc: str,
) -> float:
    """One pass; each optimizer step averages the loss over the samples of its (possibly partial) group."""
    model.train()
    batches = len(loader)
    batch, samples = loader.batch_size, len(cast(Sized, loader.dataset))
    assert batch is not None, "the loader batches"
    sizes = [min(batch, samples - i * batch) for i in range(batches)]
    total, seen = 0.0, 0
    optimizer.zero_grad(set_to_none=True)
    for i, (clips, labels) in enumerate(progress(loader, desc=desc, leave=False)):
        start = (i // accum) * accum
        group_samples = sum(sizes[start : start + accum])
        clips, labels = clips.to(device, non_blocking=True), labels.to(device)
        with _autocast(device):
            logits = model(scale_clips(clips))
        loss = model.loss_fn(logits, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{desc}: loss is {loss.item()} at batch {i}; lower lr in the model's row"
            )
        scaler.scale(loss * (len(labels) / group_samples)).backward()
        total += loss.item() * len(labels)
        seen += len(labels)
        if (i + 1) % accum == 0 or i + 1 == batches:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
    return total / max(seen, 1)


@torch.no_grad()
def evaluate(model: ClipClassifier, loader: DataLoader, device: torch.device) -> dict[str, float | None]:
    """Validation metrics of `model` on `loader`."""
    model.eval()
    logits, labels = [], []
    for clips, y in loader:
        with _autocast(device):
            logits.append(model(scale_clips(clips.to(device))).float().cpu())
        labels.append(y)
    all_logits, all_labels = torch.cat(logits), torch.cat(labels)
    loss = float(model.loss_fn(all_logits, all_labels))
    return {"loss": loss, **binary_metrics(all_labels.numpy(), torch.sigmoid(all_logits).numpy())}


def train_fold(
    clips_csv: str | os.PathLike[str],
    folds_csv: str | os.PathLike[str],
    fold: int,
    spec: ModelSpec,
    out_metrics: str | os.PathLike[str],
    out_weights: str | os.PathLike[str],
    checkpoint_dir: str | os.PathLike[str],
    *,
    device: str,
    gradient_checkpointing: bool,
    seed: int,
    memory_log: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] = ".",
) -> dict[str, Any]:
    """Train `spec.name` on fold `fold` (resuming from `checkpoint_dir` when it holds a checkpoint), write the
    metrics JSON and the best epoch's fp16 export (`out_weights` + `.json`). Returns the metrics."""
    mem = MemoryLog(memory_log, "train")
    mem.mark("start", model=spec.name, fold=fold)
    train_rows, val_rows = fold_clips(clips_csv, folds_csv, fold)
    if train_rows.is_empty() or val_rows.is_empty():
        raise ValueError(
            f"{clips_csv} / {folds_csv}: fold {fold} has {train_rows.height} training and "
            f"{val_rows.height} validation clips; both must be non-empty"
        )
    dev = resolve_device(device, "train.device")
    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(stable_seed(seed, spec.name, fold, "init"))
        model = build_model(spec.name, spec.params, spec.num_frames, spec.size)
        model.set_gradient_checkpointing(gradient_checkpointing)
        report = check_trainable(model)
        model.to(dev)
        mem.mark("model_built", parameters={r["component"]: r for r in report})
        metrics = _fit(model, spec, fold, seed, train_rows, val_rows, dev, Path(checkpoint_dir), mem, root)
    state = checkpoint.load_state(checkpoint_dir)
    assert state is not None, "training wrote a checkpoint"
    _load_trainable(model, checkpoint.load_tensors(checkpoint_dir, state, "best"), str(checkpoint_dir))
    export_fp16(model.cpu(), export_config(spec.name, model), out_weights)
    metrics["parameters"] = report
    checkpoint.write_json(Path(out_metrics), metrics)
    mem.mark("end", best_epoch=metrics["best_epoch"])
    return metrics


def _fit(
    model: ClipClassifier,
    spec: ModelSpec,
    fold: int,
    seed: int,
    train_rows: pl.DataFrame,
    val_rows: pl.DataFrame,
    dev: torch.device,
    ckpt: Path,
    mem: MemoryLog,
    root: str | os.PathLike[str],
) -> dict[str, Any]:
    """The epoch loop from the last checkpoint on; returns the metrics summary."""
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=spec.lr, weight_decay=0.01
    )
    scaler = torch.amp.GradScaler(dev.type, enabled=dev.type == "cuda")
    key = _spec_key(spec, fold, seed)
    state = checkpoint.load_state(ckpt)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": None, "val_loss": None}
    resumed_from = None
    if state is not None:
        if state["key"] != key:
            raise ValueError(
                f"{ckpt}: checkpoint was made for {state['key']}, not {key}; delete it to start over"
            )
        _load_trainable(model, checkpoint.load_tensors(ckpt, state, "model"), str(ckpt))
        opt = checkpoint.load_tensors(ckpt, state, "optimizer")
        optimizer.load_state_dict(
            checkpoint.unflatten_optimizer(
                {k: v for k, v in opt.items() if k.startswith("state.")}, state["optimizer"]
            )
        )
        if state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(opt["rng.cpu"])
        if "rng.cuda" in opt and dev.type == "cuda":
            torch.cuda.set_rng_state(opt["rng.cuda"], dev)
        history, best, resumed_from = state["history"], state["best"], state["epoch"]
        log.info("resuming %s fold %d after epoch %d from %s", spec.name, fold, state["epoch"], ckpt)
    start = 0 if state is None else state["epoch"] + 1
    val = DataLoader(
        ClipDataset(val_rows, spec.num_frames, spec.size, root),
        batch_size=spec.batch_size,
        num_workers=spec.num_workers,
    )
    train_set = ClipDataset(train_rows, spec.num_frames, spec.size, root)
    for epoch in range(start, spec.epochs):
        t0 = time.perf_counter()
        shuffle = torch.Generator().manual_seed(stable_seed(seed, spec.name, fold, "shuffle", epoch))
        order = torch.randperm(len(train_set), generator=shuffle).tolist()
        loader = DataLoader(
            train_set,
            batch_size=spec.batch_size,
            sampler=order,
            num_workers=spec.num_workers,
            generator=shuffle,
        )
        train_loss = _train_epoch(
            model,
            loader,
            optimizer,
            scaler,
            dev,
            spec.grad_accum_steps,
            f"{spec.name} fold{fold} epoch {epoch + 1}/{spec.epochs}",
        )
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            **{f"val_{k}": v for k, v in evaluate(model, val, dev).items()},
            "seconds": time.perf_counter() - t0,
            "clips_per_s": len(train_set) / (time.perf_counter() - t0),
        }
        history.append(row)
        groups = {"model": _trainable_state(model)}
        opt_tensors, opt_meta = checkpoint.flatten_optimizer(optimizer.state_dict())
        groups["optimizer"] = {**opt_tensors, **_rng_tensors(dev)}
        if best["val_loss"] is None or row["val_loss"] < best["val_loss"]:
            best = {"epoch": epoch, "val_loss": row["val_loss"]}
            groups["best"] = groups["model"]
        checkpoint.save_checkpoint(
            ckpt,
            epoch,
            groups,
            {
                "key": key,
                "history": history,
                "best": best,
                "optimizer": opt_meta,
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            },
        )
        log.info("%s fold %d epoch %d: %s", spec.name, fold, epoch, json.dumps(row))
        mem.mark("epoch", epoch=epoch, train_loss=train_loss, val_loss=row["val_loss"])
    best_row = history[best["epoch"]]
    return {
        "model": spec.name,
        "fold": fold,
        "device": str(dev),
        "epochs": spec.epochs,
        "train_clips": train_rows.height,
        "val_clips": val_rows.height,
        "resumed_from_epoch": resumed_from,
        "best_epoch": best["epoch"],
        "best": best_row,
        "final": history[-1],
        "history": history,
    }
