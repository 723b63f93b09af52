"""`fvc plan`'s training prediction against the measured peak of a real training, per model and size.

For every model at its config.yaml row ("demo") and at 2x its frames and size ("2x"): the prediction
(`fvc.slurm.plan.train_prediction` from the row's probe, `fvc.train.memory_probe`, a fresh interpreter)
beside the peak RSS of one epoch of real training of fold 0 (`train_memory:case`, a fresh interpreter,
one thread, fp32) on demo-like clips of that shape. Both exclude Snakemake's overhead, which `fvc plan` adds
to each side alike. Target: 0.75 <= predicted / measured <= 1.25 for every model and size.
Run: `.venv/bin/python benchmarks/plan_accuracy.py [--models a b] [--scales 1 2] [--videos 12]`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from fresh import run_fresh
from setups import ROOT

TARGET = 0.25


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--scales", nargs="*", type=int, default=[1, 2], help="frames and size multiplied")
    parser.add_argument("--videos", type=int, default=12, help="demo-like videos of the training clips")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from train_fixtures import write_dataset

    from fvc.clips.folds import fold_clips
    from fvc.core.config import load_config, model_specs
    from fvc.slurm.plan import train_prediction
    from fvc.train.memory_probe import probe_model

    config = load_config(args.config)
    specs = model_specs(config)
    augment = config["augment"]
    ok = True
    print(f"{'model':<20} {'size':>10} {'predicted':>9} {'measured':>8} {'ratio':>6}  terms (MB)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales:
            frames, size = augment["num_frames"] * scale, augment["size"] * scale
            root = Path(tmp) / f"data{scale}"
            clips, folds = write_dataset(
                root, args.videos, augment["num_augmentations"], 3, num_frames=frames, size=size
            )
            count = sum(table.height for table in fold_clips(clips, folds, 0))
            for name in args.models or list(specs):
                spec = replace(
                    specs[name],
                    epochs=1,
                    num_frames=specs[name].num_frames * scale,
                    size=specs[name].size * scale,
                )
                probe = probe_model(spec, config["infer"]["batch_size"], Path(tmp) / f"{name}-{scale}.json")
                predicted, terms, _ = train_prediction(spec, probe, count)
                case = {
                    "spec": asdict(spec),
                    "gc": spec.gradient_checkpointing,
                    "out": f"{tmp}/{name}-{scale}",
                    "root": str(root),
                    "clips": str(clips),
                    "folds": str(folds),
                }
                measured = run_fresh("train_memory:case", case, threads=1)["peak_mb"]
                ratio = predicted / measured
                ok &= abs(ratio - 1) <= TARGET
                shape = f"{spec.num_frames}x{spec.size}px"
                print(
                    f"{name:<20} {shape:>10} {predicted:>9.0f} {measured:>8.0f} {ratio:>6.2f}  {terms}",
                    flush=True,
                )
    print(
        f"\ntarget: {1 - TARGET:.2f} <= predicted / measured peak RSS <= {1 + TARGET:.2f} "
        f"({count} clips, 1 epoch)"
    )
    print("VERDICT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
