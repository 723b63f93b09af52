"""Inference of one model on the held-out test videos: every member's fp16 export (a fold's, and in a grid
over seeds a fold's with one seed: `fvc.core.paths.member`) loaded lean, one at a time (the previous one freed
first), each video scored from K clips decoded from its file (`infer.clips_per_video`,
`fvc.infer.video_clips`), and its probabilities averaged over its clips, then over the members (the ensemble
over folds and seeds).

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
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from fvc.clips.folds import read_folds
from fvc.core.atomic import atomic_path, write_text
from fvc.core.devices import resolve_device
from fvc.core.memory import MB, MemoryLog
from fvc.core.metrics import THRESHOLD, binary_metrics, group_scores
from fvc.core.paths import member, parse_member
from fvc.core.precision import DTYPES, candidates
from fvc.core.progress import progress
from fvc.data.video import DECODE_THREADS
from fvc.infer.precision import (
    check_precision,
    compute_copy_bytes,
    compute_in,
    deadline,
    probe,
)
from fvc.infer.preflight import preflight
from fvc.infer.video_clips import VideoClips, centre_clip
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
                lambda batch: (batch[0], batch[1][:1]),
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


@dataclass(frozen=True)
class FoldScores:
    """Fake probabilities `[folds, videos, clips]` of one model, and the precision that ran (`requested`,
    `chosen`, `probe`, and `folds`: each fold's)."""

    probs: np.ndarray
    precision: dict[str, Any]


def score_videos(
    model_name: str,
    weights: Paths,
    rows: list[dict[str, Any]],
    *,
    device: torch.device,
    batch_size: int,
    precision: str,
    clips_per_video: int,
    memory: MemoryLog,
    reserved_mb: int = 0,
    decode_threads: int = DECODE_THREADS,
) -> FoldScores:
    """Score `clips_per_video` clips of every video of `rows` (`path`) with each fold's export: every export
    checked and the pre-flight passed before any is loaded, then one fold at a time loaded lean, run over
    the videos (decoded one at a time) and freed. `precision`: auto probes on the first fold; the later
    folds compute in its choice."""
    check_precision(precision, device)
    configs = [read_export_config(path, model_name) for path in weights]
    compute_copy = check_exports(weights, configs)
    num_frames = max(c["num_frames"] for c in configs)
    size = max(c["size"] for c in configs)
    need = preflight(
        weights, model_name, batch_size, num_frames, size, device, reserved_mb * MB, compute_copy
    )
    memory.mark("preflight", need_mb=need.host_total / MB, weights_mb=need.weights / MB)
    record: dict[str, Any] = {}
    used, probs = [], []
    job_batches = len(weights) * math.ceil(len(rows) * clips_per_video / batch_size)
    for fold, (path, config) in enumerate(zip(weights, configs, strict=True)):
        model = load_export(path, device)
        memory.mark("load", fold=fold, weights=str(path))
        dataset = VideoClips(rows, config["num_frames"], config["size"], clips_per_video, decode_threads)
        loader = DataLoader(dataset, batch_size=batch_size)
        desc = f"{model_name} fold {fold}"
        fold_probs, ran = predict(
            model, loader, device, record.get("chosen", precision), job_batches=job_batches, desc=desc
        )
        record = record or {**ran, "requested": precision}
        log.info(
            "%s: %d clips of %d videos on %s in %s", desc, len(fold_probs), len(rows), device, ran["chosen"]
        )
        memory.mark("predicted", fold=fold, precision=ran["chosen"])
        used.append(ran["chosen"])
        probs.append(fold_probs.reshape(len(rows), clips_per_video))
        del model, loader, dataset
        _free(device)
        memory.mark("unload", fold=fold)
    return FoldScores(np.stack(probs).astype(np.float64), {**record, "folds": used})


def held_out_videos(index_parquet: str | os.PathLike[str], folds_csv: str | os.PathLike[str]) -> pl.DataFrame:
    """The held-out test videos (split == test) with their label, group and, from the index, path and frames,
    sorted by video_id."""
    folds = read_folds(folds_csv).filter(pl.col("split") == "test")
    if folds.is_empty():
        raise ValueError(f"{folds_csv}: no test videos (split == test)")
    index = pl.read_parquet(Path(index_parquet), columns=["video_id", "path"])
    videos = folds.select("video_id", "label", "group").join(index, on="video_id", how="left")
    missing = videos.filter(pl.col("path").is_null())["video_id"].to_list()
    if missing:
        raise ValueError(f"{index_parquet}: test videos of {folds_csv} missing from the index: {missing[:5]}")
    return videos.sort("video_id")


def _ensemble_metrics(labels: np.ndarray, groups: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Per video and per group metrics of the fold ensemble of `probs` `[folds, videos]`."""
    ensemble = probs.mean(axis=0)
    return {
        **binary_metrics(labels, ensemble),
        "per_group": binary_metrics(*group_scores(labels, ensemble, groups)),
    }


def member_record(weights_path: str | os.PathLike[str], position: int) -> dict[str, Any]:
    """An ensemble member's name, fold and seed from its export's name (`fold0-seed7.safetensors`); an export
    named otherwise is member `fold<position>` without a seed."""
    parsed = parse_member(weights_path)
    fold, seed = parsed if parsed is not None else (position, None)
    return {"member": member(fold, seed), "fold": fold, "seed": seed}


def infer_model(
    model_name: str,
    weights: Paths,
    index_parquet: str | os.PathLike[str],
    folds_csv: str | os.PathLike[str],
    out_parquet: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    out_metrics: str | os.PathLike[str],
    *,
    device: str,
    batch_size: int,
    precision: str,
    clips_per_video: int,
    memory_log: str | os.PathLike[str] | None = None,
    reserved_mb: int = 0,
) -> dict[str, Any]:
    """Score each held-out test video (folds.csv, its file from the index) from `clips_per_video` clips
    with each member's export (`weights`: folds, or folds x seeds): per video the mean over its clips, then
    over the members (the ensemble; metrics.json's `members` counts them). Writes the per-video predictions
    (parquet + CSV) and the metrics JSON, which also holds the ensemble's metrics from the centre clip alone
    (K = 1) beside those of K clips. `reserved_mb`: memory of other processes of the job (Snakemake's) left
    out of the pre-flight allowance. Returns the metrics."""
    memory = MemoryLog(memory_log, "infer")
    memory.mark("start", model=model_name, members=len(weights), clips_per_video=clips_per_video)
    dev = resolve_device(device, "infer.device")
    check_precision(precision, dev)
    centre = centre_clip(clips_per_video)
    videos = held_out_videos(index_parquet, folds_csv)
    scores = score_videos(
        model_name,
        weights,
        videos.to_dicts(),
        device=dev,
        batch_size=batch_size,
        precision=precision,
        clips_per_video=clips_per_video,
        memory=memory,
        reserved_mb=reserved_mb,
    )
    per_fold = scores.probs.mean(axis=2)  # [members, videos]: each video's mean over its clips
    members = [member_record(path, i) for i, path in enumerate(weights)]
    fold_cols = [f"prob_{m['member']}" for m in members]
    table = videos.select("video_id", "label").with_columns(
        [pl.Series(col, per_fold[fold], dtype=pl.Float64) for fold, col in enumerate(fold_cols)]
    )
    table = table.with_columns(pl.mean_horizontal(fold_cols).alias("prob_ensemble"))
    table = table.with_columns((pl.col("prob_ensemble") >= THRESHOLD).cast(pl.Int64).alias("pred_ensemble"))
    labels, groups = videos["label"].to_numpy(), videos["group"].to_numpy()
    metrics = {
        "model": model_name,
        "device": str(dev),
        "precision": scores.precision,
        "videos": table.height,
        "groups": len(set(groups)),
        # The ensemble's members: folds x seeds.
        "members": len(members),
        "seeds": sorted({m["seed"] for m in members if m["seed"] is not None}),
        "clips_per_video": {
            str(k): _ensemble_metrics(labels, groups, probs)
            for k, probs in {1: scores.probs[:, :, centre], clips_per_video: per_fold}.items()
        },
        "folds": [
            {**m, "weights": str(path), **binary_metrics(labels, table[col].to_numpy())}
            for m, path, col in zip(members, weights, fold_cols, strict=True)
        ],
        "ensemble": binary_metrics(labels, table["prob_ensemble"].to_numpy()),
        # Each group (cascade) scored from its videos (mean probability): fvc.core.metrics.group_scores.
        "per_group": {
            "folds": [
                {**m, **binary_metrics(*group_scores(labels, table[col].to_numpy(), groups))}
                for m, col in zip(members, fold_cols, strict=True)
            ],
            "ensemble": binary_metrics(*group_scores(labels, table["prob_ensemble"].to_numpy(), groups)),
        },
    }
    with atomic_path(out_parquet) as tmp:
        table.write_parquet(tmp)
    with atomic_path(out_csv) as tmp:
        table.write_csv(tmp)
    write_text(out_metrics, json.dumps(metrics, indent=2) + "\n")
    memory.mark("end", videos=table.height)
    return metrics
