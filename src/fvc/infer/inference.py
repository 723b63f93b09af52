"""Inference of one model on the held-out test clips: every fold's fp16 export loaded lean, one fold at a time
(the previous one freed first), and the folds' fake probabilities averaged per video (the ensemble).

The weights stay fp16; the compute precision is `infer.precision`: forced, or `auto`, chosen at the start of
the job by a probe on the first fold's real batches (`fvc.infer.precision`). A precision whose ops fail on
the first batch (no kernel for that dtype) falls back to the next candidate. The log and metrics.json say
which precision ran and what the probe measured.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
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
from fvc.core.precision import DTYPES, candidates
from fvc.core.progress import progress
from fvc.infer.precision import (
    check_precision,
    compute_copy_bytes,
    compute_in,
    deadline,
    probe,
)
from fvc.infer.preflight import preflight
from fvc.models import build_model, scale_clips
from fvc.weights.export import config_path
from fvc.weights.lean_load import check_tensors, lean_load, tensor_infos
from fvc.weights.safetensors_io import LoadError

log = logging.getLogger(__name__)
PROBE_SHARE = 0.02  # the auto probe's cost, as a share of the job's forwards
TOLERANCE = 0.02  # max |p - p_fp32| of an accepted precision
FAILURES = (RuntimeError, NotImplementedError, ValueError)
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


def check_exports(weights: Paths, configs: list[dict[str, Any]]) -> int:
    """Before any fold is loaded: every export's tensors (from its headers) fit its model built on the meta
    device (this also imports the model code, so the pre-flight baseline counts it). Returns the bytes of the
    fp32 compute copy (`compute_copy_bytes`), the widest any precision or fallback makes."""
    copy = 0
    for path, config in zip(weights, configs, strict=True):
        with torch.device("meta"):
            model = _builder(config)()
        check_tensors(model, tensor_infos(path), path)
        copy = max(copy, compute_copy_bytes(model, torch.float32))
    return copy


class Runner(contextlib.ExitStack):
    """Forwards of one fp16-stored model in any precision: fp16 directly (fp16 autocast on CUDA), fp32 and
    bf16 through `compute_in`, whose copy or hooks stay while that precision keeps being used."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.model, self.device, self.current = model, device, ""

    def _use(self, precision: str) -> None:
        if precision == self.current:
            return
        self.close()
        if precision != "fp16":
            self.enter_context(compute_in(self.model, DTYPES[precision]))
        self.current = precision

    def __call__(self, precision: str, clips: torch.Tensor, seconds: float = math.inf) -> torch.Tensor:
        """Fake probabilities `[B]` (fp32, CPU) of a uint8 batch `[B, T, 3, H, W]`; TooSlow past `seconds`."""
        self._use(precision)
        x = scale_clips(clips.to(self.device))
        limit = deadline(self.model, seconds) if seconds < math.inf else contextlib.nullcontext()
        if precision == "fp16" and self.device.type == "cuda":
            autocast: contextlib.AbstractContextManager = torch.autocast("cuda", dtype=torch.float16)
        else:
            autocast = contextlib.nullcontext()
            x = x.to(DTYPES[precision])
        with limit, autocast:
            logits = self.model(x)
        return torch.sigmoid(logits.float().reshape(-1)).cpu()


def predict(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    precision: str = "auto",
    *,
    job_batches: int | None = None,
    desc: str = "infer",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fake probabilities for every clip of `loader`, and what ran: `{requested, chosen, probe}`. `auto`
    probes the device's candidates on the first batches (cost: PROBE_SHARE of `job_batches` forwards,
    default this loader's); a precision that fails on its first batch falls back to the next candidate
    (logged); an error of the last candidate, or after the first batch, is raised."""
    check_precision(precision, device)
    # Python floats, not a small tensor per batch: those, kept among the freed batches, fragment glibc's heap
    # (RSS grew by about one uint8 batch per batch: +160 MB over 12,500 tiny clips).
    outputs: dict[int, list[float]] = {}
    batches = enumerate(clips for clips, _ in progress(loader, desc=desc, unit="batch"))
    record: dict[str, Any] = {"requested": precision, "chosen": precision, "probe": []}
    with torch.inference_mode(), Runner(model, device) as run:
        pending: list[tuple[int, torch.Tensor]] = []
        if precision == "auto":
            chosen, trials, pending = probe(
                candidates(device, inference=True),
                lambda name, batch, seconds: run(name, batch[1], seconds),
                batches,
                lambda batch, probs: outputs.__setitem__(batch[0], probs.tolist()),
                PROBE_SHARE,
                job_batches or len(loader),
                TOLERANCE,
            )
            record.update(chosen=chosen, probe=[trial.record() for trial in trials])
            for trial in trials:
                log.info("%s: probe %s", desc, trial.record())
            log.info(
                "%s: auto chose %s (%s)",
                desc,
                chosen,
                "; ".join(trial.summary() for trial in trials),
            )
        order = [record["chosen"], *(p for p in candidates(device, inference=True) if p != record["chosen"])]
        for index, clips in itertools.chain(pending, batches):  # one batch in memory at a time
            while True:
                try:
                    outputs[index] = run(order[0], clips).tolist()
                    break
                except FAILURES as exc:
                    if outputs or len(order) == 1:
                        raise
                    reason = str(exc).splitlines()[0]
                    log.warning(
                        "%s: %s failed on %s (%s); using %s", desc, order[0], device, reason, order[1]
                    )
                    order.pop(0)
        record["chosen"] = order[0]
    log.info("%s: computed in %s (%s requested)", desc, record["chosen"], precision)
    probs = np.array([p for i in sorted(outputs) for p in outputs[i]], dtype=np.float32)
    return probs, record


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
    precision: str,
    memory_log: str | os.PathLike[str] | None = None,
    reserved_mb: int = 0,
) -> dict[str, Any]:
    """Predict the test clips with each fold's export (`weights`, in fold order), ensemble them, and write the
    per-video predictions (parquet + CSV) and the metrics JSON. `precision`: `infer.precision` (auto probes
    on the first fold; the later folds compute in its choice). `reserved_mb`: memory of other processes of
    the job (Snakemake's) left out of the pre-flight allowance. Returns the metrics."""
    memory = MemoryLog(memory_log, "infer")
    memory.mark("start", model=model_name, folds=len(weights))
    dev = resolve_device(device, "infer.device")
    check_precision(precision, dev)
    configs = [read_export_config(path, model_name) for path in weights]
    clips = held_out_clips(clips_csv, folds_csv).sort("original_video", "clip_path")
    if clips.is_empty():
        raise ValueError(f"{folds_csv}: no test clips (split == test, aug_idx 0) in {clips_csv}")
    compute_copy = check_exports(weights, configs)
    num_frames = max(c["num_frames"] for c in configs)
    size = max(c["size"] for c in configs)
    need = preflight(weights, model_name, batch_size, num_frames, size, dev, reserved_mb * MB, compute_copy)
    memory.mark("preflight", need_mb=need.host_total / MB, weights_mb=need.weights / MB)

    table = clips.select(pl.col("original_video").alias("video_id"), "label", "group")
    record: dict[str, Any] = {}
    used = []
    job_batches = len(weights) * math.ceil(clips.height / batch_size)
    for fold, (path, config) in enumerate(zip(weights, configs, strict=True)):
        model = load_export(path, dev)
        memory.mark("load", fold=fold, weights=str(path))
        loader = DataLoader(ClipDataset(clips, config["num_frames"], config["size"]), batch_size=batch_size)
        asked = record.get("chosen", precision)
        desc = f"{model_name} fold {fold}"
        probs, ran = predict(model, loader, dev, asked, job_batches=job_batches, desc=desc)
        record = record or {**ran, "requested": precision}
        log.info("%s: %d clips on %s in %s", desc, len(probs), dev, ran["chosen"])
        memory.mark("predicted", fold=fold, precision=ran["chosen"])
        used.append(ran["chosen"])
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
        "precision": {**record, "folds": used},
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
