"""Peak memory and speed of training every model at its config.yaml row, against the row's mem_mb, with
gradient checkpointing on and off.

Each model trains one epoch of fold 0 on demo-like clips (24 videos x 3 clips of 8 x 64 x 64, as the demo's
augment stage makes them) in a fresh interpreter (`benchmarks/fresh.py`: peak RSS from the child's own
VmHWM), one thread, in fp32, once with gradient checkpointing on and once off. The table's mem_mb must cover
the peak at the row's own `gradient_checkpointing` + Snakemake's per-job overhead
(`resources.snakemake_overhead_mb`) with at most 40 % slack: 1.0 <= mem_mb / (peak + overhead) <= 1.4.
A row needs checkpointing only where its peak without it would not fit its mem_mb.
Run: `.venv/bin/python benchmarks/train_memory.py [--models a b]`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fresh import run_fresh
from setups import ROOT, training_set

from fvc.slurm.memory_keys import snakemake_overhead_mb

MAX_SLACK = 1.4


def case(args: dict[str, Any]) -> dict[str, Any]:
    """Train one epoch with gradient checkpointing `args['gc']`; its clips/s."""
    from fvc.core.config import ModelSpec
    from fvc.train.training import train_fold

    spec = ModelSpec(**{**args["spec"], "gradient_checkpointing": args["gc"]})
    out = Path(args["out"])
    metrics = train_fold(
        args["clips"],
        args["folds"],
        0,
        spec,
        out / "metrics.json",
        out / "fold0.safetensors",
        out / "ckpt",
        device="cpu",
        seed=0,
        precision="fp32",
        root=args["root"],
    )
    return {"clips_per_s": metrics["history"][-1]["clips_per_s"], "clips": metrics["train_clips"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--models", nargs="*", default=None)
    args = parser.parse_args()
    rows, ok = [], True
    with tempfile.TemporaryDirectory() as tmp:
        config, specs, data = training_set(args.config, Path(tmp) / "data", videos=24)
        overhead_mb = snakemake_overhead_mb(config)
        names = args.models or list(specs)
        print(
            f"{'model':<20} {'gc':>3} {'mem_mb':>7} {'peak on':>8} {'peak off':>8} {f'+{overhead_mb}':>7} "
            f"{'ratio':>6} {'clips/s on':>10} {'off':>8}  verdict",
            flush=True,
        )
        for name in names:
            spec = {**asdict(specs[name]), "epochs": 1}
            base = {"spec": spec, **data}
            on, off = (
                run_fresh("train_memory:case", {**base, "gc": gc, "out": f"{tmp}/{name}-{gc}"}, threads=1)
                for gc in (True, False)
            )
            own = on if spec["gradient_checkpointing"] else off
            needed = own["peak_mb"] + overhead_mb
            ratio = spec["mem_mb"] / needed
            verdict = "OK" if 1.0 <= ratio <= MAX_SLACK else ("TOO LOW" if ratio < 1.0 else "TOO MUCH SLACK")
            ok &= verdict == "OK"
            rows.append(own)
            print(
                f"{name:<20} {'on' if spec['gradient_checkpointing'] else 'off':>3} {spec['mem_mb']:>7} "
                f"{on['peak_mb']:>8.0f} {off['peak_mb']:>8.0f} {needed:>7.0f} {ratio:>6.2f} "
                f"{on['clips_per_s']:>10.1f} {off['clips_per_s']:>8.1f}  {verdict}",
                flush=True,
            )
    print(
        f"\ntarget: 1.00 <= mem_mb / (peak RSS at the row's gc + {overhead_mb} MB) <= {MAX_SLACK} for every "
        f"model ({rows[0]['clips']} training clips, 1 epoch, fp32)"
    )
    print("VERDICT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
