"""What each `fvc` command does once parsed: the config it runs with, its inputs checked (a missing one names
the stage that makes it), one library call, a one-line summary. The library is imported per command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema

from fvc.core import schema
from fvc.core.config import MODEL_NAMES, ModelSpec, load_config
from fvc.core.errors import FvcError, MissingInputError
from fvc.core.paths import (
    DEMO,
    AuditFiles,
    AugmentFiles,
    DemoFiles,
    DownloadFiles,
    ExportFiles,
    FoldsFiles,
    IndexFiles,
    InferFiles,
    Layout,
    PredictFiles,
    TrainFiles,
)

Overrides = dict[str, Any]


def settings(args: argparse.Namespace, overrides: Overrides, workdir: Path = Path(".")) -> tuple[dict, str]:
    """(config, where it came from): `--config`, else `<workdir>/config.yaml` when it exists, else the
    schema's defaults alone; then each command-line override, checked against its key's schema."""
    path = args.config or (workdir / "config.yaml" if (workdir / "config.yaml").exists() else None)
    if path is not None:
        config, source = load_config(path), str(path)
    else:
        config, source = (
            {**schema.defaults(), "models": {}},
            f"the schema's defaults (no {workdir / 'config.yaml'}; give --config)",
        )
    for key, value in overrides.items():
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(schema.key_schema(key)).iter_errors(value)
        )
        if error is not None:
            raise FvcError(f"{key} = {value!r} (from the command line): {error.message}")
        *parents, name = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[name] = value
    return config, source


def require(path: Path, made_by: str | None) -> Path:
    """`path`, or MissingInputError naming the command that makes it."""
    if not path.exists():
        hint = f"; run `{made_by}` (or the workflow) first" if made_by else ""
        raise MissingInputError(f"{path}: no such file{hint}")
    if path.is_dir():
        raise FvcError(f"{path}: is a directory, not a file")
    return path


def model_spec(config: dict, source: str, model: str) -> ModelSpec:
    """The model's row of the config's table."""
    if model not in MODEL_NAMES:
        raise FvcError(f"--model {model!r}: no such model; models are {', '.join(MODEL_NAMES)}")
    if model not in config["models"]:
        raise FvcError(f"models.{model}: no such row in {source}")
    return ModelSpec(name=model, **config["models"][model])


def demo_data(args: argparse.Namespace, overrides: Overrides) -> int:
    config, _ = settings(args, overrides)
    demo = DemoFiles(args.out_dir) if args.out_dir else DEMO
    spec = config["dataset"]["demo"]
    from fvc.data.demo import make_demo_dataset

    rows = make_demo_dataset(demo.path, videos=spec["videos"], seed=spec["seed"], memory_log=args.memory_log)
    fake = sum(row["label"] == "fake" for row in rows)
    print(f"{len(rows)} videos ({fake} fake, {len(rows) - fake} real) in {demo.archive}")
    return 0


def download(args: argparse.Namespace, overrides: Overrides) -> int:
    config, _ = settings(args, overrides)
    demo = config["dataset"]["demo"]["enabled"] and args.manifest is None
    configured = config["dataset"]["manifest"]
    manifests = [Path(p) for p in ([configured] if isinstance(configured, str) else configured)]
    manifests = [args.manifest] if args.manifest else [DEMO.manifest] if demo else manifests
    for manifest in manifests:
        require(manifest, "fvc demo-data" if demo else None)
    out = DownloadFiles(args.out_dir) if args.out_dir else Layout(config["results_dir"]).download
    from fvc.data.download import download_all

    report = download_all(
        manifests,
        out.videos_dir,
        out.videos_csv,
        failed_csv=out.failed_csv,
        labels=config["dataset"]["labels"],
        memory_log=args.memory_log,
        **config["download"],
    )
    print(
        f"{len(report.rows)} videos in {out.videos_csv} ({report.fetched} fetched, {report.skipped} present, "
        f"{len(report.failed)} failed)"
    )
    return 0


def index(args: argparse.Namespace, overrides: Overrides) -> int:
    config, _ = settings(args, overrides)
    layout = Layout(config["results_dir"])
    videos = require(args.videos or layout.download.videos_csv, "fvc download")
    out = IndexFiles(args.out_dir) if args.out_dir else layout.index
    from fvc.data.index import build_index

    report = build_index(
        videos,
        out.parquet,
        out.csv,
        out.rejected,
        memory_log=args.memory_log,
        check_frames=config["index"]["check_frames"],
        clip_frames=config["augment"]["num_frames"],
        min_frames=config["index"]["min_frames"],
        download_failed=None if args.videos else layout.download.failed_csv,
    )
    print(f"indexed {report.indexed} videos, rejected {report.rejected} (see {out.rejected})")
    return 0


def augment(args: argparse.Namespace, overrides: Overrides) -> int:
    config, _ = settings(args, overrides)
    layout = Layout(config["results_dir"])
    index_parquet = require(args.index or layout.index.parquet, "fvc index")
    out = AugmentFiles(args.out_dir) if args.out_dir else layout.augment
    clip = config["augment"]
    from fvc.clips.augment import augment_all

    report = augment_all(
        index_parquet,
        out.clips_csv,
        out.rejected,
        clips_dir=out.clips_dir,
        journal=out.journal,
        num_frames=clip["num_frames"],
        size=clip["size"],
        num_augmentations=clip["num_augmentations"],
        seed=config["seed"],
        memory_log=args.memory_log,
        decode_threads=clip["decode_threads"],
        index_rejected=None if args.index else layout.index.rejected,
        download_failed=None if args.index else layout.download.failed_csv,
    )
    print(f"{report.clips} clips in {out.clips_csv} ({report.made} made, {report.rejected} videos rejected)")
    return 0


def folds(args: argparse.Namespace, overrides: Overrides) -> int:
    config, _ = settings(args, overrides)
    layout = Layout(config["results_dir"])
    clips = require(args.clips or layout.augment.clips_csv, "fvc augment")
    out = FoldsFiles(args.out_dir) if args.out_dir else layout.folds
    from fvc.clips.folds import make_folds

    table = make_folds(
        clips,
        out.folds_csv,
        k=config["folds"]["k"],
        test_fraction=config["folds"]["test_fraction"],
        seed=config["seed"],
        memory_log=args.memory_log,
    )
    print(f"{table.height} videos in {out.folds_csv}")
    return 0


def train(args: argparse.Namespace, overrides: Overrides) -> int:
    config, source = settings(args, overrides)
    spec = model_spec(config, source, args.model)
    k = config["folds"]["k"]
    if not 0 <= args.fold < k:
        raise FvcError(f"--fold {args.fold}: folds.k is {k} in {source}, so the fold is one of 0..{k - 1}")
    layout = Layout(config["results_dir"])
    clips = require(args.clips or layout.augment.clips_csv, "fvc augment")
    folds_csv = require(args.folds or layout.folds.folds_csv, "fvc folds")
    out = TrainFiles(args.out_dir) if args.out_dir else layout.train(args.model, args.fold)
    exports = ExportFiles(args.export_dir) if args.export_dir else layout.exports(args.model)
    from fvc.slurm.memory_keys import snakemake_overhead_mb
    from fvc.train.training import train_fold

    metrics = train_fold(
        clips,
        folds_csv,
        args.fold,
        spec,
        out.metrics,
        exports.weights(args.fold),
        out.checkpoints,
        device=config["train"]["device"],
        precision=config["train"]["precision"],
        seed=config["seed"],
        memory_log=args.memory_log,
        root=args.root or ".",
        snakemake_overhead_mb=snakemake_overhead_mb(config),
    )
    print(json.dumps({"best_epoch": metrics["best_epoch"], **metrics["best"]}))
    return 0


def infer(args: argparse.Namespace, overrides: Overrides) -> int:
    config, _ = settings(args, overrides)
    if args.model not in MODEL_NAMES:
        raise FvcError(f"--model {args.model!r}: no such model; models are {', '.join(MODEL_NAMES)}")
    layout = Layout(config["results_dir"])
    exports = ExportFiles(args.export_dir) if args.export_dir else layout.exports(args.model)
    weights = [exports.weights(fold) for fold in range(config["folds"]["k"])]
    for fold, path in enumerate(weights):
        if not path.exists():
            raise MissingInputError(
                f"no trained model for {args.model} fold {fold} ({path}): run "
                f"`fvc train --model {args.model} --fold {fold}` (or the workflow) first"
            )
    index = require(args.index or layout.index.parquet, "fvc index")
    folds_csv = require(args.folds or layout.folds.folds_csv, "fvc folds")
    out = InferFiles(args.out_dir) if args.out_dir else layout.infer(args.model)
    from fvc.infer.inference import infer_model

    metrics = infer_model(
        args.model,
        weights,
        index,
        folds_csv,
        out.predictions_parquet,
        out.predictions_csv,
        out.metrics,
        device=config["infer"]["device"],
        batch_size=config["infer"]["batch_size"],
        precision=config["infer"]["precision"],
        clips_per_video=config["infer"]["clips_per_video"],
        memory_log=args.memory_log,
    )
    print(json.dumps(metrics["ensemble"]))
    return 0


def predict(args: argparse.Namespace, overrides: Overrides) -> int:
    config, _ = settings(args, overrides)
    layout = Layout(config["results_dir"])
    from fvc.infer.predict import exports_of, format_predictions, predict_all

    if args.export_dir:
        exports = exports_of(args.export_dir)
    else:
        models = args.models or config["predict"]["models"] or config["train"]["models"]
        unknown = [m for m in models if m not in MODEL_NAMES]
        if unknown:
            raise FvcError(f"--models {unknown[0]!r}: no such model; models are {', '.join(MODEL_NAMES)}")
        exports = {}
        for model in models:
            files = layout.exports(model)
            exports[model] = [files.weights(fold) for fold in range(config["folds"]["k"])]
            for fold, path in enumerate(exports[model]):
                if not path.exists():
                    raise MissingInputError(
                        f"no trained model for {model} fold {fold} ({path}): run "
                        f"`fvc train --model {model} --fold {fold}` (or the workflow) first, or give "
                        "--export-dir"
                    )
    out = PredictFiles(args.out_dir) if args.out_dir else layout.predict
    table, rejected = predict_all(
        args.inputs,
        exports,
        out,
        device=config["infer"]["device"],
        batch_size=config["infer"]["batch_size"],
        precision=config["infer"]["precision"],
        clips_per_video=config["infer"]["clips_per_video"],
        ensemble_models=config["predict"]["ensemble_models"],
        check_frames=config["index"]["check_frames"],
        memory_log=args.memory_log,
    )
    print(format_predictions(table, rejected))
    print(f"\nwrote {out.predictions_csv}, {out.predictions_parquet}, {out.rejected_csv}")
    return 0


def audit(args: argparse.Namespace, overrides: Overrides) -> int:
    workdir = args.workdir or Path(".")
    if not workdir.is_dir():
        raise FvcError(f"{workdir}: no such workflow directory")
    config_path = args.config or workdir / "config.yaml"
    if not config_path.exists():
        raise FvcError(f"{config_path}: no such file; give --config FILE, or --workdir of a workflow")
    config, _ = settings(args, overrides, workdir)
    out = AuditFiles(args.out_dir) if args.out_dir else Layout(workdir / config["results_dir"]).audit
    from fvc.slurm.audit import audit_workflow
    from fvc.slurm.recommend import apply_recommendations
    from fvc.slurm.render import render_table

    result = audit_workflow(
        workdir,
        out.csv,
        out_parquet=out.parquet,
        safety_factor=config["audit"]["safety_factor"],
        config=config,
        plot=out.plot,
        snippet_path=out.recommended,
        memory_log=args.memory_log,
        run=args.run,
        all_runs=args.all_runs,
        config_name=str(config_path),
    )
    if result.message:
        print(result.message, file=sys.stderr)
    runs = ", ".join(result.runs) or "(no SLURM run)"
    print(f"run(s): {runs}\nconfig: {result.config_source}\n")
    print(render_table(result.rows, result.recommendations))
    print(f"\nwrote {out.csv}, {out.parquet}, {out.plot}, {out.recommended}")
    if args.apply:
        diff = apply_recommendations(config_path, result.recommendations)
        print(diff or f"{config_path}: already right-sized, nothing changed")
    return 0


def plan(args: argparse.Namespace, overrides: Overrides) -> int:
    workdir = args.workdir or Path(".")
    config, source = settings(args, overrides, workdir)
    from fvc.slurm.plan import plan_rows, problems, render

    rows = plan_rows(config, workdir, measure=True)
    print(render(rows))
    found = problems(rows)
    for message in found:
        print(f"fvc plan: {message}", file=sys.stderr)
    if found:
        print(f"fvc plan: raise these in {source} before running the workflow", file=sys.stderr)
    return 1 if found else 0


def profile(args: argparse.Namespace, overrides: Overrides) -> int:
    from fvc.slurm.profile import install_profile

    dest = install_profile(args.dest, force=args.force)
    print(f"installed the SLURM profile in {dest}: run `snakemake --profile slurm`")
    return 0


def import_weights(args: argparse.Namespace, overrides: Overrides) -> int:
    from fvc.core.atomic import human_bytes
    from fvc.weights.kinetics import import_weights as write_backbone

    result = write_backbone(args.model, args.checkpoint, args.out, args.preset)
    meta = result["metadata"]
    print(
        f"wrote {args.out}: {meta['model']} {meta['preset']} backbone, {result['tensors']} tensors, "
        f"{human_bytes(result['bytes'])} (from {meta['source']}, sha256 {meta['source_sha256'][:12]})\n"
        f"use it: models.{args.model}.params: {{backbone: {args.out}, {_preset_params(meta['params'])}}}"
    )
    return 0


def _preset_params(params_json: str) -> str:
    """The preset's params in YAML flow style, for the config line to copy."""
    params = json.loads(params_json)
    return ", ".join(f"{k}: {json.dumps(v)}" for k, v in params.items())
