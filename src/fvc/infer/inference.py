"""Inference of one model on the held-out test clips: every fold's fp16 export loaded lean, one fold at a time
(the previous one freed first), and the folds' fake probabilities averaged per video (the ensemble).

The fp16 weights run in fp16 (under autocast on CUDA) when the model's ops allow it (tried on the first
batch); otherwise each module's fp16 tensors are upcast to fp32 only for its own forward ("fp32 compute
from fp16 storage"), so the model is never held in fp32. The log and metrics.json say which.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from fvc.clips.dataset import ClipDataset
from fvc.clips.folds import held_out_clips
from fvc.core.atomic import atomic_path, write_text
from fvc.core.devices import resolve_device
from fvc.core.memory import MB, MemoryLog
from fvc.core.metrics import binary_metrics, group_scores
from fvc.core.progress import progress
from fvc.infer.preflight import preflight
from fvc.models import build_model, scale_clips
from fvc.weights.export import config_path
from fvc.weights.lean_load import check_tensors, lean_load, tensor_infos
from fvc.weights.safetensors_io import LoadError

log = logging.getLogger(__name__)
FP16 = "fp16"
FP32_FROM_FP16 = "fp32 compute from fp16 storage"
Paths = Sequence[str | os.PathLike[str]]


def read_export_config(weights_path: str | os.PathLike[str], model_name: str | None = None) -> dict[str, Any]:
    """The JSON config next to an fp16 export, checked for the keys `build_model` needs, and its model."""
    path = config_path(weights_path)
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LoadError(f"{path}: cannot read the export config of {weights_path}: {exc}") from exc
    missing = sorted({"model", "params", "num_frames", "size"} - config.keys())
    if missing:
        raise LoadError(f"{path}: export config lacks {missing}")
    if model_name is not None and config["model"] != model_name:
        raise LoadError(f"{path}: export of model {config['model']!r}, expected {model_name!r}")
    return config


def _builder(config: dict[str, Any]) -> Callable[[], nn.Module]:
    return partial(build_model, config["model"], config["params"], config["num_frames"], config["size"])


def load_export(weights_path: str | os.PathLike[str], device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild an exported model on the meta device and fill it lean with its fp16 weights."""
    return lean_load(_builder(read_export_config(weights_path)), weights_path, device=device)


def check_exports(weights: Paths, configs: list[dict[str, Any]]) -> None:
    """Before any fold is loaded: every export's tensors (from its headers) fit its model built on the meta
    device (this also imports the model code, so the pre-flight baseline counts it)."""
    for path, config in zip(weights, configs, strict=True):
        with torch.device("meta"):
            model = _builder(config)()
        check_tensors(model, tensor_infos(path), path)


@contextlib.contextmanager
def fp32_compute(model: nn.Module) -> Iterator[None]:
    """While active, every module's own fp16 parameters and buffers (and fp16 inputs) are upcast to fp32 for
    its forward only, and the fp16 tensors put back after it: fp32 compute, one module's weights in fp32."""
    stash: dict[nn.Module, dict[str, torch.Tensor]] = {}

    def to_fp32(value: Any) -> Any:
        is_half = isinstance(value, torch.Tensor) and value.dtype == torch.float16
        return value.float() if is_half else value

    def upcast(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        saved = {}
        for name, tensor in [*module._parameters.items(), *module._buffers.items()]:
            if tensor is not None and tensor.dtype == torch.float16:
                saved[name] = tensor
                full = tensor.float()
                is_param = name in module._parameters
                setattr(module, name, nn.Parameter(full, requires_grad=False) if is_param else full)
        stash[module] = saved
        return tuple(to_fp32(a) for a in args), {k: to_fp32(v) for k, v in kwargs.items()}

    def restore(module: nn.Module, args: tuple, output: Any) -> None:
        for name, tensor in stash.pop(module).items():
            setattr(module, name, tensor)

    handles = []
    for module in model.modules():
        if any(t is not None for t in [*module._parameters.values(), *module._buffers.values()]):
            handles.append(module.register_forward_pre_hook(upcast, with_kwargs=True))
            handles.append(module.register_forward_hook(restore))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _forward(model: nn.Module, clips: torch.Tensor, device: torch.device, compute: str) -> torch.Tensor:
    """Fake probabilities `[B]` of a uint8 batch `[B, T, 3, H, W]`."""
    x = scale_clips(clips.to(device))
    if compute == FP32_FROM_FP16:
        with fp32_compute(model):
            logits = model(x)
    elif device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.float16):
            logits = model(x)
    else:
        logits = model(x.half())
    return torch.sigmoid(logits.float().reshape(-1)).cpu()


def predict(
    model: nn.Module, loader: DataLoader, device: torch.device, desc: str = "infer"
) -> tuple[np.ndarray, str]:
    """Fake probabilities for every clip of `loader`, and the compute mode used: fp16 (autocast on CUDA)
    unless the first batch fails in fp16 (an op without fp16 kernel or a dtype mismatch), then fp32 compute
    from the fp16 storage; an error that fp32 repeats is raised."""
    compute = FP16
    probs: list[torch.Tensor] = []
    with torch.inference_mode():
        for clips, _ in progress(loader, desc=desc, unit="batch"):
            if not probs and compute == FP16:
                try:
                    probs.append(_forward(model, clips, device, FP16))
                    continue
                except (RuntimeError, NotImplementedError, ValueError) as exc:
                    compute = FP32_FROM_FP16
                    reason = str(exc).splitlines()[0]
                    log.warning("%s: fp16 failed on %s (%s); %s", desc, device, reason, compute)
            probs.append(_forward(model, clips, device, compute))
    return torch.cat(probs).numpy() if probs else np.zeros(0), compute


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def infer_model(
    model_name: str,
    weights: Paths,
    clips_csv: str | os.PathLike[str],
    folds_csv: str | os.PathLike[str],
    out_parquet: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    out_metrics: str | os.PathLike[str],
    *,
    device: str,
    batch_size: int,
    memory_log: str | os.PathLike[str] | None = None,
    reserved_mb: int = 0,
) -> dict[str, Any]:
    """Predict the test clips with each fold's export (`weights`, in fold order), ensemble them, and write the
    per-video predictions (parquet + CSV) and the metrics JSON. `reserved_mb`: memory of other processes of
    the job (Snakemake's) left out of the pre-flight allowance. Returns the metrics."""
    memory = MemoryLog(memory_log, "infer")
    memory.mark("start", model=model_name, folds=len(weights))
    dev = resolve_device(device, "infer.device")
    configs = [read_export_config(path, model_name) for path in weights]
    clips = held_out_clips(clips_csv, folds_csv).sort("original_video", "clip_path")
    if clips.is_empty():
        raise ValueError(f"{folds_csv}: no test clips (split == test, aug_idx 0) in {clips_csv}")
    check_exports(weights, configs)
    num_frames = max(c["num_frames"] for c in configs)
    size = max(c["size"] for c in configs)
    need = preflight(weights, model_name, batch_size, num_frames, size, dev, reserved_mb * MB)
    memory.mark("preflight", need_mb=need.host_total / MB, weights_mb=need.weights / MB)

    table = clips.select(pl.col("original_video").alias("video_id"), "label", "group")
    modes = []
    for fold, (path, config) in enumerate(zip(weights, configs, strict=True)):
        model = load_export(path, dev)
        memory.mark("load", fold=fold, weights=str(path))
        loader = DataLoader(ClipDataset(clips, config["num_frames"], config["size"]), batch_size=batch_size)
        probs, compute = predict(model, loader, dev, desc=f"{model_name} fold {fold}")
        log.info("%s fold %d: %d clips on %s, %s", model_name, fold, len(probs), dev, compute)
        memory.mark("predicted", fold=fold, compute=compute)
        modes.append(compute)
        table = table.with_columns(pl.Series(f"prob_fold{fold}", probs, dtype=pl.Float64))
        del model, loader
        _free(dev)
        memory.mark("unload", fold=fold)

    fold_cols = [f"prob_fold{fold}" for fold in range(len(weights))]
    per_video = table.group_by("video_id", maintain_order=True)
    videos = per_video.agg(pl.col("label", "group").first(), pl.col(fold_cols).mean())
    groups, videos = videos["group"].to_numpy(), videos.drop("group")
    videos = videos.with_columns(pl.mean_horizontal(fold_cols).alias("prob_ensemble"))
    videos = videos.with_columns((pl.col("prob_ensemble") >= 0.5).cast(pl.Int64).alias("pred_ensemble"))
    labels = videos["label"].to_numpy()
    metrics = {
        "model": model_name,
        "device": str(dev),
        "compute": sorted(set(modes)),
        "videos": videos.height,
        "groups": len(set(groups)),
        "folds": [
            {"fold": fold, "weights": str(path), **binary_metrics(labels, videos[col].to_numpy())}
            for fold, (path, col) in enumerate(zip(weights, fold_cols, strict=True))
        ],
        "ensemble": binary_metrics(labels, videos["prob_ensemble"].to_numpy()),
        # Each group (cascade) scored from its videos (mean probability): fvc.core.metrics.group_scores.
        "per_group": {
            "folds": [
                {"fold": fold, **binary_metrics(*group_scores(labels, videos[col].to_numpy(), groups))}
                for fold, col in enumerate(fold_cols)
            ],
            "ensemble": binary_metrics(*group_scores(labels, videos["prob_ensemble"].to_numpy(), groups)),
        },
    }
    with atomic_path(out_parquet) as tmp:
        videos.write_parquet(tmp)
    with atomic_path(out_csv) as tmp:
        videos.write_csv(tmp)
    write_text(out_metrics, json.dumps(metrics, indent=2) + "\n")
    memory.mark("end", videos=videos.height)
    return metrics
