"""Training of one (model, fold): precision chosen by measurement (`fvc.core.precision`), gradient
accumulation, per-model gradient checkpointing, epoch checkpoints a killed job resumes from, step
checkpoints on a stop signal, per-epoch metrics, and the best weights exported as fp16.

Stop signals (`fvc.train.stopping`: SIGUSR1 from SLURM before the time limit, SIGTERM on preemption or
cancellation): the batch in progress (and its optimizer step when it ends an accumulation group) is finished,
then a step checkpoint holds the model, optimizer, GradScaler, RNG states, the epoch and the batches done in
it, the gradients accumulated since the last optimizer step and the epoch's losses so far; the job raises
`TrainingStopped`. A signal during validation stops it with all of the epoch's batches done (the rerun
validates again). The rerun continues from that batch of the same epoch order, so its weights and metrics
are bit-identical to an uninterrupted run's.

Precision: `train.precision` forces fp32, bf16 or fp16 (fp16 with a GradScaler), or `auto` probes the
device's candidates on the job's own model and first batch before training, within `PROBE_SHARE` of the
job's training steps (a job too small for that trains in fp32). The probe restores the model's buffers,
gradients and the RNG state, so the run is the same as one with the chosen precision forced. The choice
is saved in every checkpoint: a resumed job keeps it and does not probe again.

Determinism: shuffling draws each epoch's order from `stable_seed(seed, model, fold, "shuffle", epoch)`
(`fvc.train.loader.EpochShuffle`). Module initialisers and dropout only draw from torch's global generator,
so the whole run sits inside `torch.random.fork_rng` (the caller's RNG state is restored afterwards), seeded
from `stable_seed`, and that state is saved in every checkpoint and restored on resume. The best epoch is
the one with the lowest validation loss (defined even when a small validation fold has one class, unlike
AUC).

Speed (`benchmarks/train_speed.py`, fvc's training pass beside a bare loop doing the same work): the process
keeps freed memory for reuse (`fvc.core.memory.reuse_freed_memory`: glibc's default rules otherwise fault a
step's buffers in again at every step, 10-30 % of naive_cnn's epoch in system time), a step adds no op to the
bare loop's but the batch's gather and the loss kept for the epoch's mean, and an epoch's progress bar is set
up only once the epoch runs past `PROGRESS_DELAY_S`.

Several processes (a row's `gpus` > 1 or `tasks` > 1; `fvc.train.distributed`): `train_fold` starts the
ranks, each runs `train_rank` under DistributedDataParallel on its part of every global batch
(`fvc.train.loader`); a loss is weighted by its rank's share of the global accumulation group, so the ranks'
averaged gradients are those of one process training on `batch_size x world` clips per batch (the same
order). Rank 0 alone probes the precision, validates (the others get its metrics), writes checkpoints and the
export; every rank resumes from them. Ranks other than 0 draw their dropout from a generator seeded by their
rank and position. A stop request on any rank stops all at the same batch (one all-reduce per step).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.nn.parallel import DistributedDataParallel

from fvc.clips.folds import fold_clips
from fvc.core import precision as prec
from fvc.core.config import ModelSpec
from fvc.core.devices import resolve_device
from fvc.core.errors import FvcError
from fvc.core.memory import MemoryLog, reuse_freed_memory
from fvc.core.metrics import binary_metrics
from fvc.core.progress import progress
from fvc.core.seeding import stable_seed
from fvc.models import ClipClassifier, build_model, check_trainable, export_config, scale_clips
from fvc.models.freezing import frozen_parameters
from fvc.train import checkpoint, distributed
from fvc.train.distributed import Ranks, any_rank, from_leader, summed
from fvc.train.fold_lock import holding_fold_lock
from fvc.train.headroom import check_headroom
from fvc.train.loader import Batches, EpochShuffle, make_loaders
from fvc.train.stopping import StopSignals, TrainingStopped, stop_signals
from fvc.weights.export import export_fp16

log = logging.getLogger(__name__)
T = TypeVar("T")


#: Share of the job's training steps the precision probe may take.
PROBE_SHARE = 0.02
#: An epoch's progress bar starts once the epoch has run this long: setting up and closing a bar costs
#: 0.1-0.5 ms, up to a sixth of a small model's whole epoch, and a short epoch's log line says it all.
PROGRESS_DELAY_S = 1.0


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
    """What a checkpoint must match to be resumed (the world size when above 1: it sets each rank's part)."""
    world = {"world_size": spec.world_size} if spec.world_size > 1 else {}
    return {
        **world,
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


def _forward(
    model: torch.nn.Module, clips: torch.Tensor, precision: prec.Precision, device: torch.device
) -> torch.Tensor:
    """Logits of `clips` (already on `device`; uint8, or float already scaled) under `precision`."""
    with prec.autocast(precision, device):
        return model(clips if clips.is_floating_point() else scale_clips(clips))


def _progress(
    batches: Iterable[T], total: int, desc: str, delay: float = PROGRESS_DELAY_S, initial: int = 0
) -> Iterator[T]:
    """`batches` (the last `total - initial` of `total`) in order, with a progress bar (`fvc.core.progress`)
    from the first batch that ends after `delay` seconds on."""
    start = time.perf_counter()
    items = iter(batches)
    for done, item in enumerate(items, initial + 1):
        yield item
        if time.perf_counter() - start >= delay:
            with progress(total=total, initial=done, desc=desc, leave=False) as bar:
                for item in items:
                    yield item
                    bar.update()
            return


@dataclass
class EpochProgress:
    """Where an epoch stands: batches done and their losses (the gradients accumulated since the last
    optimizer step sit in the parameters' `.grad`)."""

    step: int = 0
    losses: list[torch.Tensor] = field(default_factory=list)  # summed once at the end: no extra op per step


def _train_epoch(
    model: ClipClassifier,
    loader: Batches,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    accum: int,
    desc: str,
    precision: prec.Precision = "fp32",
    done: EpochProgress | None = None,
    stops: StopSignals | None = None,
    net: torch.nn.Module | None = None,
    ranks: Ranks = distributed.SINGLE,
) -> float | None:
    """One pass from `done` on (default: the start), forwards through `net` (default: `model`; its DDP
    wrapper with several `ranks`); each optimizer step averages the loss over the samples of its (possibly
    partial) group, over all ranks. Returns the epoch's mean loss, or None when `stops` (of any rank) asked to
    stop before the last batch: `done` then says where the epoch stands (the batch in progress, and its
    optimizer step when it ends a group, are finished first)."""
    net = model if net is None else net
    model.train()
    done = EpochProgress() if done is None else done
    sizes, global_sizes = loader.sizes(), loader.global_sizes()
    groups = [sum(global_sizes[start : start + accum]) for start in range(0, len(sizes), accum)]
    losses = done.losses
    if done.step == 0:
        optimizer.zero_grad(set_to_none=True)
    batches = _progress(loader.from_batch(done.step), len(sizes), desc, initial=done.step)
    for i, (clips, labels) in enumerate(batches, done.step):
        clips, labels = clips.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        loss = model.loss_fn(_forward(net, clips, precision, device), labels)
        # sizes[i]: the batch's clips, 0 for a stand-in (an empty part still joins the gradient reduction)
        scaler.scale(loss * (sizes[i] * ranks.world / groups[i // accum])).backward()
        losses.append(loss.detach())
        if (i + 1) % accum == 0 or i + 1 == len(sizes):
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        done.step = i + 1
        if stops is not None and done.step < len(sizes) and any_rank(stops.requested, ranks):
            return None
    if not losses:
        return 0.0
    weights = torch.tensor(sizes, dtype=torch.float32)
    mean = float(summed(torch.stack(losses).float().cpu() @ weights, ranks)) / sum(global_sizes)
    if not math.isfinite(mean):
        raise FloatingPointError(f"{desc}: mean loss is {mean}; lower lr in the model's row")
    return mean


@torch.no_grad()
def evaluate(
    model: ClipClassifier,
    loader: Batches,
    device: torch.device,
    precision: prec.Precision = "fp32",
    stops: StopSignals | None = None,
) -> dict[str, float | None] | None:
    """Validation metrics of `model` on `loader`; None when `stops` asks to stop before the end."""
    model.eval()
    logits, labels = [], []
    for clips, y in loader:
        if stops is not None and stops.requested:
            return None
        logits.append(_forward(model, clips.to(device), precision, device).float().cpu())
        labels.append(y)
    all_logits, all_labels = torch.cat(logits), torch.cat(labels)
    loss = float(model.loss_fn(all_logits, all_labels))
    return {"loss": loss, **binary_metrics(all_labels.numpy(), torch.sigmoid(all_logits).numpy())}


def choose_precision(
    model: ClipClassifier,
    loader: Batches,
    requested: str,
    device: torch.device,
    job_steps: int,
    share: float = PROBE_SHARE,
) -> dict[str, Any]:
    """`{chosen, requested, probe}`: the forced precision, or for `auto` the probe's choice on the loader's
    first batch, leaving no trace on `model` or the RNGs (FvcError naming `train.precision` for a precision
    the device cannot do)."""
    candidates = prec.resolve(requested, device, "train.precision")
    if len(candidates) == 1:
        return {"chosen": candidates[0], "requested": requested, "probe": []}
    clips, labels = next(iter(loader))
    clips, labels = clips.to(device), labels.to(device)

    def step(precision: prec.Precision) -> torch.Tensor:
        torch.manual_seed(0)  # the same dropout on every call
        logits = _forward(model, clips, precision, device)
        loss = model.loss_fn(logits, labels)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return torch.cat([loss.detach().reshape(1), logits.detach().float()])

    cuda = [device.index or 0] if device.type == "cuda" else []
    model.train()
    with prec.no_trace(model, cuda):
        result = prec.probe(step, candidates, budget_steps=share * job_steps, device=device)
    return {"chosen": result.chosen, "requested": requested, "probe": result.as_dict()}


@holding_fold_lock
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
    seed: int,
    precision: str,
    memory_log: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] = ".",
    probe_share: float = PROBE_SHARE,
    snakemake_overhead_mb: int = 0,
    log: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Train `spec.name` on fold `fold` (resuming from `checkpoint_dir` when it holds a checkpoint) in
    `precision` (`auto`: chosen by `choose_precision` with `probe_share`), with the row's gradient
    checkpointing; write the metrics JSON and the best epoch's fp16 export (`out_weights` + `.json`, frozen
    parameters in a shared file). Warns when the peak plus `snakemake_overhead_mb` nears `spec.mem_mb`.
    A row of several processes (`spec.world_size`) runs `train_rank` in each (`fvc.train.distributed`),
    their stderr appended to `log`; raises `TrainingStopped` when they stopped. Returns the metrics."""
    kwargs: dict[str, Any] = {
        "clips_csv": str(clips_csv),
        "folds_csv": str(folds_csv),
        "fold": fold,
        "out_metrics": str(out_metrics),
        "out_weights": str(out_weights),
        "checkpoint_dir": str(checkpoint_dir),
        "device": device,
        "seed": seed,
        "precision": precision,
        "memory_log": None if memory_log is None else str(memory_log),
        "root": str(root),
        "probe_share": probe_share,
        "snakemake_overhead_mb": snakemake_overhead_mb,
    }
    if spec.world_size == 1:
        return train_rank(spec=spec, **kwargs)
    code = distributed.launch(spec.world_size, spec.cpus, {"spec": asdict(spec), **kwargs}, log)
    if code == TrainingStopped.exit_code:
        raise TrainingStopped(f"{spec.name} fold {fold}: the ranks stopped; rerun to resume")
    if code:
        raise FvcError(f"{spec.name} fold {fold}: a training rank failed with exit code {code}; see {log}")
    return json.loads(Path(out_metrics).read_text())


def train_rank(
    clips_csv: str | os.PathLike[str],
    folds_csv: str | os.PathLike[str],
    fold: int,
    spec: ModelSpec,
    out_metrics: str | os.PathLike[str],
    out_weights: str | os.PathLike[str],
    checkpoint_dir: str | os.PathLike[str],
    *,
    device: str,
    seed: int,
    precision: str,
    memory_log: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] = ".",
    probe_share: float = PROBE_SHARE,
    snakemake_overhead_mb: int = 0,
) -> dict[str, Any]:
    """`train_fold`'s work in this process: the whole of it, or one rank's part when a process group is set
    up (`fvc.train.distributed`): rank 0 writes the outputs; each rank's memory marks carry its rank."""
    ranks = distributed.current()
    reuse_freed_memory()
    mem = MemoryLog(memory_log, "train")
    mem.mark("start", model=spec.name, fold=fold, **_rank_field(ranks))
    train_rows, val_rows = fold_clips(clips_csv, folds_csv, fold)
    if train_rows.is_empty() or val_rows.is_empty():
        raise ValueError(
            f"{clips_csv} / {folds_csv}: fold {fold} has {train_rows.height} training and "
            f"{val_rows.height} validation clips; both must be non-empty"
        )
    dev = resolve_device(device, "train.device", f"models.{spec.name}.gpus")
    prec.resolve(precision, dev, "train.precision")
    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), stop_signals() as stops:
        torch.manual_seed(stable_seed(seed, spec.name, fold, "init"))
        model = build_model(spec.name, spec.params, spec.num_frames, spec.size)
        model.set_gradient_checkpointing(spec.gradient_checkpointing)
        report = check_trainable(model)
        model.to(dev)
        mem.mark("model_built", parameters={r["component"]: r for r in report}, **_rank_field(ranks))
        shuffle_parts = (seed, spec.name, fold, "shuffle")
        loaders = make_loaders(
            train_rows, val_rows, spec, root, dev, *shuffle_parts, rank=ranks.rank, world=ranks.world
        )
        ckpt = Path(checkpoint_dir)
        args = (model, spec, fold, seed, loaders, dev, ckpt, mem, precision, probe_share, stops, ranks)
        metrics = _fit(*args)
    if not ranks.leader:
        mem.mark("end", best_epoch=metrics["best_epoch"], **_rank_field(ranks))
        return metrics
    state = checkpoint.load_state(checkpoint_dir)
    assert state is not None, "training wrote a checkpoint"
    _load_trainable(model, checkpoint.load_tensors(checkpoint_dir, state, "best"), str(checkpoint_dir))
    export_fp16(model.cpu(), export_config(spec.name, model), out_weights, frozen=frozen_parameters(model))
    metrics["parameters"] = report
    checkpoint.write_json(Path(out_metrics), metrics)
    end = mem.mark("end", best_epoch=metrics["best_epoch"], **_rank_field(ranks))
    # The job's memory holds every rank: rank 0's peak stands for each.
    check_headroom(spec.name, spec.mem_mb, end["peak_rss_mb"] * ranks.world, snakemake_overhead_mb)
    return metrics


def _rank_field(ranks: Ranks) -> dict[str, Any]:
    """A memory mark's `rank` field, in a job of several processes."""
    return {"rank": ranks.rank} if ranks.world > 1 else {}


def _resume_precision(state: dict[str, Any], requested: str, ckpt: Path) -> dict[str, Any]:
    """The checkpoint's precision record; a forced precision must be the one it was made in."""
    saved = state["precision"]
    if requested not in ("auto", saved["chosen"]):
        raise FvcError(
            f"train.precision is {requested!r} but {ckpt} was made in {saved['chosen']}; set it to auto or "
            f"{saved['chosen']}, or delete the checkpoint folder to start over"
        )
    return {**saved, "requested": requested, "resumed": True}


def _progress_tensors(model: ClipClassifier, done: EpochProgress, ranks: Ranks) -> dict[str, torch.Tensor]:
    """A step checkpoint's `step` group: the epoch's losses so far (with several ranks, every rank's: a
    [world, step] tensor; each rank's batch parts differ) and the gradients accumulated since the last
    optimizer step (the same on every rank). Every rank calls it (it gathers)."""
    grads = {f"grad.{name}": p.grad for name, p in model.named_parameters() if p.grad is not None}
    losses = torch.stack(done.losses)
    return {"losses": distributed.gathered(losses, ranks) if ranks.world > 1 else losses, **grads}


def _load_progress(model: ClipClassifier, tensors: dict[str, torch.Tensor], ranks: Ranks) -> EpochProgress:
    """Inverse of `_progress_tensors`: this rank's losses, and the gradients put back into the parameters."""
    params = dict(model.named_parameters())
    for name, grad in tensors.items():
        if name.startswith("grad."):
            param = params[name.removeprefix("grad.")]
            param.grad = grad.to(param.device, param.dtype)
    losses = tensors["losses"][ranks.rank] if ranks.world > 1 else tensors["losses"]
    return EpochProgress(losses=list(losses.unbind()))


def _fit(
    model: ClipClassifier,
    spec: ModelSpec,
    fold: int,
    seed: int,
    loaders: tuple[Batches, EpochShuffle, Batches],
    dev: torch.device,
    ckpt: Path,
    mem: MemoryLog,
    requested: str,
    probe_share: float,
    stops: StopSignals | None = None,
    ranks: Ranks = distributed.SINGLE,
) -> dict[str, Any]:
    """The epoch loop from the last checkpoint on (an epoch's or a step's); returns the metrics summary.
    When `stops` asks to stop, writes a step checkpoint at the next batch boundary and raises
    `TrainingStopped`. With several `ranks`, trains through DistributedDataParallel; rank 0 alone writes."""
    train, shuffle, val = loaders
    net: torch.nn.Module = model
    if ranks.world > 1:  # rank 0's weights and buffers on every rank
        net = DistributedDataParallel(model, device_ids=[dev] if dev.type == "cuda" else None)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=spec.lr, weight_decay=0.01
    )
    key = _spec_key(spec, fold, seed)
    state = checkpoint.load_state(ckpt)
    if state is not None and state["key"] != key:
        raise ValueError(
            f"{ckpt}: checkpoint was made for {state['key']}, not {key}; delete it to start over"
        )
    if state is None:
        steps = spec.epochs * len(train)
        chosen_here = (
            choose_precision(model, train, requested, dev, steps, probe_share) if ranks.leader else None
        )
        precision = from_leader(chosen_here, ranks)
    else:
        precision = _resume_precision(state, requested, ckpt)
    chosen: prec.Precision = precision["chosen"]
    log.info("%s fold %d precision: %s", spec.name, fold, json.dumps(precision))
    scaler = torch.amp.GradScaler(dev.type, enabled=chosen == "fp16")
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": None, "val_loss": None}
    resumed_from = None
    start, done = 0, EpochProgress()
    if state is not None:
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
        if state.get("step") is None:
            start = state["epoch"] + 1
            log.info("resuming %s fold %d after epoch %d from %s", spec.name, fold, state["epoch"], ckpt)
        else:
            start, done = (
                state["epoch"],
                _load_progress(model, checkpoint.load_tensors(ckpt, state, "step"), ranks),
            )
            done.step = state["step"]
            log.info(
                "%s fold %d resumed from epoch %d step %d of %s", spec.name, fold, start, done.step, ckpt
            )
    stored = (start, done.step)  # the position the checkpoint on disk holds
    if not ranks.leader:  # dropout of its own
        torch.manual_seed(stable_seed(seed, spec.name, fold, "rank", ranks.rank, start, done.step))

    def save(epoch: int, step: int | None, groups: dict[str, dict[str, torch.Tensor]]) -> None:
        if not ranks.leader:
            return
        opt_tensors, opt_meta = checkpoint.flatten_optimizer(optimizer.state_dict())
        groups = {
            "model": _trainable_state(model),
            **groups,
            "optimizer": {**opt_tensors, **_rng_tensors(dev)},
        }
        extra = {"key": key, "precision": precision, "history": history, "best": best, "optimizer": opt_meta}
        scaler_state = scaler.state_dict() if scaler.is_enabled() else None
        checkpoint.save_checkpoint(ckpt, epoch, groups, {**extra, "scaler": scaler_state}, step)

    def stop(epoch: int, step: int) -> TrainingStopped:
        assert stops is not None
        if (epoch, step) == stored:
            what = "nothing new since the last checkpoint"
        elif step == 0:
            what = "epoch checkpoint written"
        else:
            save(epoch, step, {checkpoint.STEP_GROUP: _progress_tensors(model, done, ranks)})
            what = "step checkpoint written"
        message = f"stopping at epoch {epoch} step {step} on {stops.name}: {what}"
        log.info("%s fold %d %s", spec.name, fold, message)
        mem.mark("stopped", epoch=epoch, step=step, signal=stops.name, **_rank_field(ranks))
        return TrainingStopped(f"{spec.name} fold {fold}: {message}; rerun to resume")

    for epoch in range(start, spec.epochs):
        if stops is not None and any_rank(stops.requested, ranks):
            raise stop(epoch, done.step)
        t0 = time.perf_counter()
        shuffle.set_epoch(epoch)
        desc = f"{spec.name} fold{fold} epoch {epoch + 1}/{spec.epochs}"
        args = (
            model,
            train,
            optimizer,
            scaler,
            dev,
            spec.grad_accum_steps,
            desc,
            chosen,
            done,
            stops,
            net,
            ranks,
        )
        train_loss = _train_epoch(*args)
        t1 = time.perf_counter()
        validate = train_loss is not None and ranks.leader
        val_metrics = from_leader(evaluate(model, val, dev, chosen, stops) if validate else None, ranks)
        if train_loss is None or val_metrics is None:
            raise stop(epoch, done.step)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            **{f"val_{k}": v for k, v in val_metrics.items()},
            "seconds": time.perf_counter() - t0,
            "train_seconds": t1 - t0,
            "clips_per_s": len(shuffle) / (t1 - t0),
        }
        history.append(row)
        groups = {}
        if best["val_loss"] is None or row["val_loss"] < best["val_loss"]:
            best = {"epoch": epoch, "val_loss": row["val_loss"]}
            groups["best"] = _trainable_state(model)
        save(epoch, None, groups)
        done = EpochProgress()
        log.info("%s fold %d epoch %d: %s", spec.name, fold, epoch, json.dumps(row))
        mem.mark("epoch", epoch=epoch, train_loss=train_loss, val_loss=row["val_loss"], **_rank_field(ranks))
    best_row = history[best["epoch"]]
    return {
        "model": spec.name,
        "fold": fold,
        "device": str(dev),
        "world_size": ranks.world,
        "precision": precision,
        "gradient_checkpointing": spec.gradient_checkpointing,
        "epochs": spec.epochs,
        "train_clips": len(shuffle),
        "val_clips": len(val.data),
        "resumed_from_epoch": resumed_from,
        "resumed_from_step": None if state is None else state.get("step"),
        "best_epoch": best["epoch"],
        "best": best_row,
        "final": history[-1],
        "history": history,
    }
