"""`fvc plan`: every job's configured memory next to a prediction, before the first run.

Prediction of each job (MB; every `mem_mb` includes Snakemake's overhead, `resources.snakemake_overhead_mb`):

- train (per model and fold): the probe's peak after one training step of one sample
  (`fvc.train.memory_probe`: a train job's imports, weights, gradients and AdamW state of the trainable part,
  the first step's workspace) + (batch_size - 1) x the measured activations per sample + the clips the loader
  holds (the fold's training and validation clips as float32, 1.5x while their uint8 copies load, when they
  fit `PRELOAD_SHARE` of mem_mb, as `fvc.train.loader` does; else its batch buffers) + the checkpoint's
  serialised copy (trainable weights, best weights, two AdamW moments).
  GPU rows also get a `vram_mb` prediction: the step's growth over the baseline plus the other samples.
- infer (per model): the inference imports' baseline + the pre-flight's estimate (`fvc.infer.preflight`)
  from the probe's parameter bytes instead of the exports' headers, which do not exist yet.
- data stages, folds, audit: the stage's imports (a fresh interpreter's peak) + its buffers: decoder frames
  of the largest video in the index (index, augment), download chunks in flight.

`fvc plan` takes the missing measurements (a few seconds to half a minute per model row, in fresh
interpreters) and caches them under `<results_dir>/plan/` by the content hash of what they depend on (the
row less its resources, infer.batch_size, the fvc, torch and Python versions). The Snakefile runs
`check_cached` at every start of the main process: it reads that cache only, so it costs milliseconds, and a
row without a cached probe is reported as not yet predicted rather than probed.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from fvc import __version__
from fvc.core.config import ModelSpec, model_specs
from fvc.core.errors import FvcError
from fvc.core.paths import Layout
from fvc.slurm.memory_keys import snakemake_overhead_mb

MB = 1024 * 1024
#: Fields of a model row that size its jobs but change nothing the probe measures.
UNPROBED_FIELDS = ("mem_mb", "infer_mem_mb", "runtime", "gpus", "gpu_model", "vram_mb", "epochs")
#: What each job's script imports (its baseline is a fresh interpreter's peak after these imports).
STAGE_IMPORTS = {
    "demo_data": ("fvc.data.demo",),
    "download": ("fvc.data.download",),
    "index": ("fvc.data.index",),
    "augment": ("fvc.clips.augment",),
    "folds": ("fvc.clips.folds", "sklearn.model_selection"),
    "infer": ("fvc.infer.inference", "sklearn.metrics"),
    "audit": ("fvc.slurm.audit",),
}
#: Share of mem_mb below which the training clips are held in memory (`fvc.train.loader.PRELOAD_SHARE`).
PRELOAD_SHARE = 0.1
#: Decoded frames a decoder holds per thread and besides its threads (reference frames), in yuv420.
DECODER_FRAMES_PER_THREAD, DECODER_REFERENCE_FRAMES = 2, 6
#: Index stage's decoder threads (`fvc.data.video.DECODE_THREADS`).
INDEX_DECODE_THREADS = 2


NOT_MEASURED = "not measured: run `fvc plan`"


class PlanError(FvcError):
    """A row's memory is below its prediction; the message names each key."""


@dataclass(frozen=True)
class PlanRow:
    """One job of the workflow: what it asks for and what it is predicted to need (None: not measured)."""

    job: str
    key: str
    mem_mb: int
    predicted_mb: float | None
    terms: str
    vram_key: str | None = None
    vram_mb: int | None = None
    predicted_vram_mb: float | None = None

    def problems(self) -> list[str]:
        """One message per request below its prediction."""
        found = []
        if self.predicted_mb is not None and self.mem_mb < self.predicted_mb:
            found.append(
                f"{self.key} = {self.mem_mb} is below the predicted {math.ceil(self.predicted_mb)} MB"
            )
        if (
            self.vram_key
            and self.predicted_vram_mb is not None
            and (self.vram_mb or 0) < self.predicted_vram_mb
        ):
            found.append(
                f"{self.vram_key} = {self.vram_mb} is below the predicted "
                f"{math.ceil(self.predicted_vram_mb)} MB"
            )
        return found


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _versions() -> dict[str, str]:
    return {"fvc": __version__, "torch": version("torch"), "python": sys.version.split()[0]}


def probe_key(spec: ModelSpec, infer_batch: int) -> str:
    """Content hash of what a model row's probe depends on."""
    row = {k: v for k, v in asdict(spec).items() if k not in UNPROBED_FIELDS}
    return _digest({"row": row, "infer_batch": infer_batch, **_versions()})


def cache_dir(config: dict, workdir: Path = Path(".")) -> Path:
    """Where the plan's measurements are cached."""
    return workdir / config["results_dir"] / "plan"


def probe_path(config: dict, spec: ModelSpec, workdir: Path = Path(".")) -> Path:
    return (
        cache_dir(config, workdir)
        / f"model-{spec.name}-{probe_key(spec, config['infer']['batch_size'])}.json"
    )


def baseline_path(config: dict, stage: str, workdir: Path = Path(".")) -> Path:
    key = _digest({"imports": STAGE_IMPORTS[stage], **_versions()})
    return cache_dir(config, workdir) / f"baseline-{stage}-{key}.json"


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def train_prediction(spec: ModelSpec, probe: dict[str, Any], clips: float | None) -> tuple[float, str, float]:
    """(host MB without Snakemake's overhead, its terms, device MB) of one training job; `clips` in the fold's
    table (None: unknown, the preload share is assumed full)."""
    clip_mb = spec.num_frames * 3 * spec.size * spec.size / MB
    step = probe["first_step_mb"]
    activations = (spec.batch_size - 1) * probe["activations_per_sample_mb"]
    preload = PRELOAD_SHARE * spec.mem_mb if clips is None else clips * clip_mb * 4
    if preload <= PRELOAD_SHARE * spec.mem_mb:  # float32, and while loading their uint8 list and stack
        data, data_term = 1.5 * preload, "clips held"
    else:  # read per batch: uint8 + float copies of each batch a worker prepares, two prefetched per worker
        buffers = 2 * max(spec.num_workers if spec.num_workers is not None else spec.cpus - 1, 0) + 1
        data, data_term = buffers * spec.batch_size * clip_mb * 5, "batch buffers"
    ckpt = 4 * probe["trainable_mb"]
    device = step - probe["baseline_mb"] + activations
    terms = (
        f"probe step {step:.0f} (imports {probe['baseline_mb']:.0f}) + {spec.batch_size - 1} x "
        f"{probe['activations_per_sample_mb']:.1f} activations + {data:.0f} {data_term} + "
        f"{ckpt:.0f} checkpoint"
    )
    return step + activations + data + ckpt, terms, device


def _fold_clips(config: dict, root: Path) -> float | None:
    """Training + validation clips of one fold (what the loader holds): every clip of the other folds' cv
    videos and the originals of its own (`fvc.clips.folds.fold_clips`), from the videos in clips.csv, else
    the index, else the demo's count; None when none is known."""
    layout = Layout(root / config["results_dir"])
    per_video = config["augment"]["num_augmentations"] + 1
    if layout.augment.clips_csv.exists():
        with layout.augment.clips_csv.open() as fh:
            videos = max(sum(1 for _ in fh) - 1, 0) / per_video
    elif layout.index.parquet.exists():
        import polars as pl

        videos = pl.scan_parquet(layout.index.parquet).select(pl.len()).collect().item()
    elif config["dataset"]["demo"]["enabled"]:
        videos = config["dataset"]["demo"]["videos"]
    else:
        return None
    k = config["folds"]["k"]
    cv = videos * (1 - config["folds"]["test_fraction"])
    return cv * ((k - 1) / k * per_video + 1 / k)


def _largest_frame(config: dict, root: Path) -> tuple[int, int] | None:
    """(width, height) of the largest video in the index; None before the index exists."""
    index = Layout(root / config["results_dir"]).index.parquet
    if not index.exists():
        return None
    import polars as pl

    table = pl.read_parquet(index, columns=["width", "height"])
    if table.is_empty():
        return None
    row = table.with_columns(area=pl.col("width") * pl.col("height")).sort("area").row(-1, named=True)
    return int(row["width"]), int(row["height"])


def decoder_mb(frame: tuple[int, int] | None, threads: int) -> float:
    """Decoder buffers for frames of `frame` (width, height): yuv420 frames per thread and for reference, and
    two RGB conversions."""
    if frame is None:
        return 0.0
    pixels = frame[0] * frame[1]
    yuv = (DECODER_FRAMES_PER_THREAD * threads + DECODER_REFERENCE_FRAMES) * pixels * 1.5
    return (yuv + 2 * pixels * 3) / MB


def _stage_rows(config: dict, root: Path, baselines: dict[str, float | None]) -> list[PlanRow]:
    frame = _largest_frame(config, root)
    video = "no index yet" if frame is None else f"largest video {frame[0]}x{frame[1]}"
    augment, download = config["augment"], config["download"]
    extra = {
        "demo_data": (0.0, ""),
        "download": (download["workers"] * download["chunk_bytes"] / MB, "chunks in flight"),
        "index": (decoder_mb(frame, INDEX_DECODE_THREADS), f"decoder ({video})"),
        "augment": (
            decoder_mb(frame, augment["decode_threads"])
            + (augment["num_augmentations"] + 1) * augment["num_frames"] * 3 * augment["size"] ** 2 / MB,
            f"decoder ({video}) + one video's clips",
        ),
        "folds": (0.0, ""),
        "audit": (0.0, ""),
    }
    rows = []
    overhead = snakemake_overhead_mb(config)
    skipped = {"demo_data": not config["dataset"]["demo"]["enabled"], "audit": not config["audit"]["enabled"]}
    for stage in [s for s in extra if not skipped.get(s)]:
        base = baselines.get(stage)
        mb, term = extra[stage]
        predicted = None if base is None else base + mb + overhead
        terms = (
            NOT_MEASURED if base is None else f"imports {base:.0f}" + (f" + {mb:.0f} {term}" if term else "")
        )
        rows.append(
            PlanRow(
                stage, f"resources.{stage}.mem_mb", config["resources"][stage]["mem_mb"], predicted, terms
            )
        )
    return rows


def plan_rows(config: dict, workdir: Path = Path("."), measure: bool = False) -> list[PlanRow]:
    """Every job the workflow's default target runs, with its prediction; `measure` takes the missing
    measurements (fresh interpreters), else only cached ones are used."""
    if measure:
        from fvc.train.memory_probe import probe_model, stage_baseline

    def baseline(stage: str) -> float | None:
        path = baseline_path(config, stage, workdir)
        if measure:
            return stage_baseline(",".join(STAGE_IMPORTS[stage]), path)
        cached = _read(path)
        return None if cached is None else float(cached["baseline_mb"])

    specs = model_specs(config)
    overhead = snakemake_overhead_mb(config)
    rows = _stage_rows(config, workdir, {s: baseline(s) for s in STAGE_IMPORTS if s != "infer"})
    infer_base = baseline("infer")
    clips = _fold_clips(config, workdir)
    for name in config["train"]["models"]:
        spec = specs[name]
        path = probe_path(config, spec, workdir)
        probe = probe_model(spec, config["infer"]["batch_size"], path) if measure else _read(path)
        gpu = spec.gpus > 0
        vram_key = f"models.{name}.vram_mb" if gpu else None
        train: tuple[float | None, str, float | None] = (None, NOT_MEASURED, None)
        if probe is not None:
            host, terms, device = train_prediction(spec, probe, clips)
            train = (host + overhead, terms, device if gpu else None)
        rows += [
            PlanRow(
                f"train {name} fold {fold}",
                f"models.{name}.mem_mb",
                spec.mem_mb,
                train[0],
                train[1],
                vram_key,
                spec.vram_mb,
                train[2],
            )
            for fold in range(config["folds"]["k"])
        ]
        infer = None if probe is None or infer_base is None else infer_base + probe["infer_mb"] + overhead
        terms = (
            NOT_MEASURED
            if infer is None or probe is None
            else f"imports {infer_base:.0f} + pre-flight {probe['infer_terms']}"
        )
        rows.append(
            PlanRow(
                f"infer {name}",
                f"models.{name}.infer_mem_mb",
                spec.infer_mem_mb,
                infer,
                terms,
                vram_key,
                spec.vram_mb,
                probe["infer_mb"] if gpu and probe else None,
            )
        )
    return rows


def cached_predictions(config: dict, workdir: Path = Path(".")) -> dict[tuple[str, str | None], float]:
    """(rule, model or None) -> the prediction `fvc plan` cached (MB, Snakemake's overhead included), for the
    audit's predicted-vs-measured column; jobs without a cached prediction are left out. One call per audit:
    it reads every cached file."""
    if not cache_dir(config, workdir).is_dir():
        return {}
    found = {}
    for row in plan_rows(config, workdir):
        rule, *rest = row.job.split()
        if row.predicted_mb is not None:
            found[(rule, rest[0] if rest else None)] = row.predicted_mb
    return found


def render(rows: list[PlanRow]) -> str:
    """The plan as a text table: job, config key, request, prediction, verdict and terms."""
    lines = [f"{'job':<32} {'key':<40} {'mem_mb':>7} {'predicted':>9}  {'verdict':<8} terms (MB)"]
    for row in rows:
        predicted = "-" if row.predicted_mb is None else f"{row.predicted_mb:.0f}"
        verdict = "?" if row.predicted_mb is None else ("TOO LOW" if row.problems() else "ok")
        lines.append(f"{row.job:<32} {row.key:<40} {row.mem_mb:>7} {predicted:>9}  {verdict:<8} {row.terms}")
        if row.vram_key:
            vram = "-" if row.predicted_vram_mb is None else f"{row.predicted_vram_mb:.0f}"
            lines.append(f"{'':<32} {row.vram_key:<40} {row.vram_mb or 0:>7} {vram:>9}")
    return "\n".join(lines)


def plan_table(config: dict, workdir: Path = Path(".")) -> str:
    """The table of cached predictions for a workflow's start (empty when `fvc plan` has cached none)."""
    if not cache_dir(config, workdir).is_dir():
        return ""
    rows = plan_rows(config, workdir)
    if all(row.predicted_mb is None for row in rows):
        return ""
    return "memory plan (`fvc plan`):\n" + render(rows)


def problems(rows: list[PlanRow]) -> list[str]:
    """Every request below its prediction, each key once."""
    return list(dict.fromkeys(message for row in rows for message in row.problems()))


def check_cached(config: dict, workdir: Path = Path(".")) -> None:
    """The Snakefile's check before anything is submitted: PlanError naming every request below its cached
    prediction (nothing to read, and nothing done, before `fvc plan` has cached any)."""
    if not cache_dir(config, workdir).is_dir():
        return
    found = problems(plan_rows(config, workdir))
    if found:
        raise PlanError(
            "memory below the prediction of `fvc plan` (raise these in the config):\n  " + "\n  ".join(found)
        )
