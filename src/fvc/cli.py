"""The `fvc` command: one subcommand per stage, each implemented by its module's `cli(argv)`."""

from __future__ import annotations

import importlib
import logging
import sys

COMMANDS = {
    "demo-data": ("fvc.data.demo", "make the demo dataset (videos, archive, manifest)"),
    "download": ("fvc.data.download", "fetch a manifest's videos: resumable, checksummed, atomic"),
    "index": ("fvc.data.index", "probe videos without decoding them; quarantine bad files"),
    "augment": ("fvc.clips.augment", "make the shared, deterministic augmented clips"),
    "folds": ("fvc.clips.folds", "grouped, stratified k-fold split"),
    "train": ("fvc.train.training", "train one (model, fold)"),
    "infer": ("fvc.infer.inference", "fp16 inference and fold ensemble of one model"),
    "audit": ("fvc.slurm.audit", "requested vs used memory per SLURM job, and right-sized mem_mb"),
}


def usage() -> str:
    """The top-level help text."""
    lines = ["usage: fvc COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`fvc COMMAND --help` for a command's arguments."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the module of the named command."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"fvc: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.cli(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
