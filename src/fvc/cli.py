"""The `fvc` command: every command's options, and the contract they share.

Parsing imports nothing heavy; a command's library code is imported after parsing (`fvc.commands`). Every
stage command reads `--config` (default `./config.yaml` when it exists, else the schema's defaults alone); an
option backed by a config key overrides it; paths default to the workflow's layout (`fvc.core.paths`).
A user error (`FvcError`, a missing or unreadable input) prints one line `fvc CMD: message` and exits 1
(`--debug` shows the traceback instead; an error with an `exit_code` exits with it, e.g. 75 for training
stopped on a signal); a usage error exits 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fvc import __version__
from fvc.core import schema
from fvc.core.errors import FvcError
from fvc.core.paths import DEMO, Layout

SETTING = "set:"  # prefix of the dest of an option that overrides a config key
RESULTS = Layout("RESULTS")  # paths in help texts; RESULTS is the config's results_dir
OS_REASONS = {
    FileNotFoundError: "no such file",
    IsADirectoryError: "is a directory, not a file",
    NotADirectoryError: "not a directory",
    PermissionError: "permission denied",
}


def setting(parser: argparse.ArgumentParser, flag: str, key: str, text: str) -> None:
    """An option overriding config key `key`; its type and default come from the schema."""
    sub = schema.key_schema(key)
    default = f"{key} of the config" + (f", else {sub['default']}" if "default" in sub else "")
    if sub.get("type") == "boolean":
        parser.add_argument(
            flag,
            dest=SETTING + key,
            action=argparse.BooleanOptionalAction,
            help=f"{text} (default: {default})",
        )
        return
    kind = {"integer": int, "number": float}.get(sub.get("type", ""), str)
    choices = f" ({' | '.join(sub['enum'])})" if "enum" in sub else ""
    metavar = flag.lstrip("-").replace("-", "_").upper()
    parser.add_argument(
        flag, dest=SETTING + key, type=kind, metavar=metavar, help=f"{text}{choices} (default: {default})"
    )


def path(parser: argparse.ArgumentParser, flag: str, default: object, text: str) -> None:
    """A path option; None when not given, so the command derives it from the layout."""
    parser.add_argument(flag, type=Path, metavar="PATH", help=f"{text} (default: {default})")


def results_dir(parser: argparse.ArgumentParser) -> None:
    setting(parser, "--results-dir", "results_dir", "folder of the stages' outputs (RESULTS below)")


def demo_data_options(parser: argparse.ArgumentParser) -> None:
    path(parser, "--out-dir", DEMO.path, "folder for manifest.csv and fvc_demo.tar.gz")
    setting(parser, "--videos", "dataset.demo.videos", "number of videos")
    setting(parser, "--seed", "dataset.demo.seed", "seed of the videos")


def download_options(parser: argparse.ArgumentParser) -> None:
    manifest = f"{DEMO.manifest} when dataset.demo.enabled, else dataset.manifest"
    path(parser, "--manifest", manifest, "manifest CSV (fvc format or FVC.csv)")
    path(parser, "--out-dir", RESULTS.download.path, "folder for videos/, videos.csv and failed.csv")
    results_dir(parser)
    setting(parser, "--chunk-bytes", "download.chunk_bytes", "bytes read at a time")
    setting(parser, "--retries", "download.retries", "retries of a failed request")
    setting(parser, "--timeout", "download.timeout_s", "seconds per request")
    setting(parser, "--max-failed-fraction", "download.max_failed_fraction", "share of entries that may fail")
    setting(parser, "--workers", "download.workers", "videos fetched at the same time")


def index_options(parser: argparse.ArgumentParser) -> None:
    path(parser, "--videos", RESULTS.download.videos_csv, "videos table (`fvc download`)")
    path(parser, "--out-dir", RESULTS.index.path, "folder for video_index.{parquet,csv} and rejected.csv")
    results_dir(parser)


def augment_options(parser: argparse.ArgumentParser) -> None:
    path(parser, "--index", RESULTS.index.parquet, "video index (`fvc index`)")
    path(
        parser,
        "--out-dir",
        RESULTS.augment.path,
        "folder for clips.csv, rejected.csv, clips/ and the journal",
    )
    results_dir(parser)
    setting(parser, "--num-frames", "augment.num_frames", "frames per clip")
    setting(parser, "--size", "augment.size", "clip frames are SIZE x SIZE")
    setting(parser, "--num-augmentations", "augment.num_augmentations", "augmented clips per video")
    setting(parser, "--decode-threads", "augment.decode_threads", "decoder threads")
    setting(parser, "--seed", "seed", "base seed of the clips")


def folds_options(parser: argparse.ArgumentParser) -> None:
    path(parser, "--clips", RESULTS.augment.clips_csv, "clip table (`fvc augment`)")
    path(parser, "--out-dir", RESULTS.folds.path, "folder for folds.csv")
    results_dir(parser)
    setting(parser, "--k", "folds.k", "number of cv folds")
    setting(parser, "--test-fraction", "folds.test_fraction", "held-out share of the groups")
    setting(parser, "--seed", "seed", "seed of the split")


def model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model name (a row of the config's models table)")


def train_options(parser: argparse.ArgumentParser) -> None:
    model_option(parser)
    parser.add_argument("--fold", type=int, required=True, help="fold to train, 0..folds.k-1")
    path(parser, "--clips", RESULTS.augment.clips_csv, "clip table (`fvc augment`)")
    path(parser, "--folds", RESULTS.folds.folds_csv, "fold table (`fvc folds`)")
    path(parser, "--out-dir", RESULTS.train("MODEL", "FOLD").path, "folder for metrics.json and checkpoints/")
    path(parser, "--export-dir", RESULTS.exports("MODEL").path, "folder for foldFOLD.safetensors and .json")
    path(parser, "--root", Path("."), "folder the clip paths are relative to")
    results_dir(parser)
    setting(parser, "--device", "train.device", "device")
    setting(parser, "--precision", "train.precision", "precision")
    setting(parser, "--seed", "seed", "seed of initialisation and shuffling")


def infer_options(parser: argparse.ArgumentParser) -> None:
    model_option(parser)
    path(parser, "--index", RESULTS.index.parquet, "video index (`fvc index`): the test videos' files")
    path(parser, "--folds", RESULTS.folds.folds_csv, "fold table (`fvc folds`)")
    path(parser, "--export-dir", RESULTS.exports("MODEL").path, "the folds' exports (`fvc train`)")
    path(
        parser, "--out-dir", RESULTS.infer("MODEL").path, "folder for predictions.{parquet,csv}, metrics.json"
    )
    results_dir(parser)
    setting(parser, "--device", "infer.device", "device")
    setting(parser, "--batch-size", "infer.batch_size", "clips per batch")
    setting(parser, "--precision", "infer.precision", "compute dtype on the fp16 weights")
    setting(parser, "--clips-per-video", "infer.clips_per_video", "clips per video, spread over it (odd)")


def predict_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="INPUT",
        help="video files, folders (searched recursively) or CSVs with a `path` column",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="MODEL",
        help="trained models scoring the videos (default: predict.models, else train.models)",
    )
    parser.add_argument(
        "--export-dir",
        type=Path,
        action="append",
        metavar="PATH",
        help="a folder of fold exports (fold0.safetensors, ...), repeated for several models "
        "(default: RESULTS/models/MODEL of --models)",
    )
    path(parser, "--out-dir", RESULTS.predict.path, "folder for predictions.{parquet,csv} and rejected.csv")
    results_dir(parser)
    setting(parser, "--ensemble-models", "predict.ensemble_models", "also average the models")
    setting(parser, "--device", "infer.device", "device")
    setting(parser, "--batch-size", "infer.batch_size", "clips per batch")
    setting(parser, "--precision", "infer.precision", "compute dtype on the fp16 weights")
    setting(parser, "--clips-per-video", "infer.clips_per_video", "clips per video, spread over it (odd)")


def audit_options(parser: argparse.ArgumentParser) -> None:
    path(parser, "--workdir", Path("."), "workflow directory; --config and RESULTS are relative to it")
    path(
        parser,
        "--out-dir",
        Path("WORKDIR", RESULTS.audit.path),
        "folder for the table, plot, recommended.yaml",
    )
    results_dir(parser)
    setting(parser, "--safety-factor", "audit.safety_factor", "recommended mem_mb = peak x this")
    parser.add_argument("--apply", action="store_true", help="write the recommendations into the config")
    runs = parser.add_mutually_exclusive_group()
    runs.add_argument(
        "--run",
        metavar="ID",
        help="audit this run, by its SLURM run id or a prefix (default: the latest run)",
    )
    runs.add_argument("--all-runs", action="store_true", help="audit the jobs of every run (default: latest)")


def plan_options(parser: argparse.ArgumentParser) -> None:
    path(parser, "--workdir", Path("."), "workflow directory; --config and RESULTS are relative to it")
    results_dir(parser)


def profile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["install"], help="install: copy the SLURM profile")
    path(
        parser,
        "--dest",
        "$XDG_CONFIG_HOME/snakemake, else ~/.config/snakemake",
        "folder of Snakemake's named profiles",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace a different profile of the same name (default: off)"
    )


def import_weights_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", choices=["x3d", "slowfast"], help="the model the checkpoint is for")
    parser.add_argument(
        "checkpoint", type=Path, help="a pytorchvideo Kinetics .pyth (X3D_S, X3D_M, SLOWFAST_8x8_R50)"
    )
    parser.add_argument(
        "out", type=Path, help="the backbone .safetensors to write (models.MODEL.params.backbone)"
    )
    parser.add_argument(
        "--preset",
        metavar="NAME",
        help="published size the checkpoint must have: x3d_s | x3d_m | slowfast_r50 "
        "(default: x3d_s for x3d, slowfast_r50 for slowfast)",
    )


@dataclass(frozen=True)
class Command:
    """One subcommand: its one-line summary, an example, and its own options."""

    summary: str
    example: str
    options: Callable[[argparse.ArgumentParser], None]


COMMANDS = {
    "demo-data": Command(
        "make the demo dataset (videos, archive, manifest)", "fvc demo-data --videos 12", demo_data_options
    ),
    "download": Command(
        "fetch a manifest's videos: resumable, checksummed, atomic", "fvc download", download_options
    ),
    "index": Command("probe videos without decoding them; quarantine bad files", "fvc index", index_options),
    "augment": Command(
        "make the shared, deterministic augmented clips", "fvc augment --seed 7", augment_options
    ),
    "folds": Command("grouped, stratified k-fold split", "fvc folds --k 5", folds_options),
    "train": Command("train one (model, fold)", "fvc train --model naive_cnn --fold 0", train_options),
    "infer": Command(
        "fp16 inference and fold ensemble of one model",
        "fvc infer --model naive_cnn --device cpu",
        infer_options,
    ),
    "predict": Command(
        "score new videos with trained models' fold exports",
        "fvc predict new_videos/ --models naive_cnn logistic_regression --ensemble-models",
        predict_options,
    ),
    "audit": Command(
        "requested vs used memory, time and CPUs per job; right-sized mem_mb, runtime, cpus",
        "fvc audit --apply",
        audit_options,
    ),
    "import-weights": Command(
        "check a Kinetics checkpoint against x3d/slowfast and write its backbone as safetensors",
        "fvc import-weights x3d X3D_S.pyth weights/x3d_s.safetensors",
        import_weights_options,
    ),
    "plan": Command(
        "every job's mem_mb next to its predicted need; exit 1 when one is below", "fvc plan", plan_options
    ),
    "profile": Command(
        "install the SLURM profile so that `snakemake --profile slurm` finds it",
        "fvc profile install",
        profile_options,
    ),
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the example epilog's line breaks; wider option column."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `fvc` parser with one subparser per command; with `only`, just that command gets its options
    (parsing one command need not build the others)."""
    parser = argparse.ArgumentParser(
        prog="fvc",
        description="fake-video classifiers inside hard memory caps: one command per workflow stage",
        epilog="`fvc COMMAND --help` for a command's options.\nexample: fvc train --model naive_cnn --fold 0",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fvc {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, command in COMMANDS.items():
        sub = commands.add_parser(
            name,
            help=command.summary,
            description=command.summary,
            epilog=f"example: {command.example}",
            formatter_class=HelpFormatter,
        )
        if only not in (None, name):
            continue
        command.options(sub)
        sub.add_argument(
            "--config",
            type=Path,
            metavar="FILE",
            help="workflow config (default: config.yaml here when it exists, else the schema's defaults)",
        )
        sub.add_argument(
            "--memory-log", type=Path, metavar="FILE", help="JSON-lines memory log (default: none)"
        )
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback")
    return parser


def overrides(args: argparse.Namespace) -> dict[str, object]:
    """The config keys given on the command line, with their values."""
    return {
        dest.removeprefix(SETTING): value
        for dest, value in vars(args).items()
        if dest.startswith(SETTING) and value is not None
    }


def user_message(exc: BaseException) -> str | None:
    """The one-line message of a user error; None for an unexpected exception."""
    if isinstance(exc, FvcError):
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return " ".join(lines[:1] + ["; ".join(lines[1:])]).strip()
    for kind, reason in OS_REASONS.items():
        if isinstance(exc, kind):
            filename = getattr(exc, "filename", None)
            return f"{filename}: {reason}" if filename is not None else str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    """Parse, then run the command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else "")
    if command is not None and command not in COMMANDS:
        print(f"fvc: unknown command {command!r}\n\n{parser.format_help()}", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from fvc import commands

        return getattr(commands, args.command.replace("-", "_"))(args, overrides(args))
    except Exception as exc:
        message = None if args.debug else user_message(exc)
        if message is None:
            raise
        print(f"fvc {args.command}: {message}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)


if __name__ == "__main__":
    sys.exit(main())
