"""Peak memory and speed of training every model at its config.yaml row, against the row's mem_mb.

Each model trains one epoch of fold 0 on demo-like clips (24 videos x 3 clips of 8 x 64 x 64, as the demo's
augment stage makes them) in a FRESH subprocess that reports its own peak RSS (ru_maxrss) and clips/s. The
table's mem_mb must cover peak + Snakemake's per-job overhead (`resources.snakemake_overhead_mb`) with at
most 40 % slack: 1.0 <= mem_mb / (peak + overhead) <= 1.4.
Run: `.venv/bin/python benchmarks/train_memory.py [--models a b]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from train_fixtures import write_dataset  # noqa: E402

from fvc.core.config import load_config, model_specs  # noqa: E402
from fvc.slurm.memory_keys import snakemake_overhead_mb  # noqa: E402

MAX_SLACK = 1.4

CHILD = """
import json, resource, sys
from fvc.core.config import ModelSpec
from fvc.train.training import train_fold
args = json.loads(sys.argv[1])
spec = ModelSpec(**args["spec"])
out = args["out"]
metrics = train_fold(
    args["clips"], args["folds"], 0, spec, out + "/metrics.json", out + "/fold0.safetensors", out + "/ckpt",
    device="cpu", gradient_checkpointing=args["gc"], seed=0, root=args["root"],
)
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
last = metrics["history"][-1]
print(json.dumps({"peak_mb": peak_mb, "clips_per_s": last["clips_per_s"], "clips": metrics["train_clips"]}))
"""


def measure(spec: dict, root: Path, clips: Path, folds: Path, out: Path, gc: bool) -> dict:
    """Train one model in a fresh Python process; its peak RSS and speed."""
    out.mkdir(parents=True)
    args = {
        "spec": spec,
        "root": str(root),
        "clips": str(clips),
        "folds": str(folds),
        "out": str(out),
        "gc": gc,
    }
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True, env=env
    )
    if done.returncode:
        raise RuntimeError(f"{spec['name']} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    args = parser.parse_args()
    config = load_config(args.config)
    specs = model_specs(config)
    overhead_mb = snakemake_overhead_mb(config)
    names = args.models or list(specs)
    gc = not args.no_gradient_checkpointing and config["train"]["gradient_checkpointing"]
    rows, ok = [], True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clips, folds = write_dataset(
            root / "data",
            videos=24,
            augmentations=config["augment"]["num_augmentations"],
            num_frames=config["augment"]["num_frames"],
            size=config["augment"]["size"],
        )
        print(
            f"{'model':<20} {'mem_mb':>7} {'peak_mb':>8} {f'+{overhead_mb}':>7} {'ratio':>6} {'clips/s':>8} "
            f"{'wall_s':>7}  verdict",
            flush=True,
        )
        for name in names:
            spec = {**asdict(specs[name]), "epochs": 1}
            result = measure(spec, root / "data", clips, folds, root / name, gc)
            needed = result["peak_mb"] + overhead_mb
            ratio = spec["mem_mb"] / needed
            verdict = "OK" if 1.0 <= ratio <= MAX_SLACK else ("TOO LOW" if ratio < 1.0 else "TOO MUCH SLACK")
            ok &= verdict == "OK"
            rows.append(result)
            print(
                f"{name:<20} {spec['mem_mb']:>7} {result['peak_mb']:>8.0f} {needed:>7.0f} {ratio:>6.2f} "
                f"{result['clips_per_s']:>8.1f} {result['wall_s']:>7.1f}  {verdict}",
                flush=True,
            )
    print(
        f"\ntarget: 1.00 <= mem_mb / (peak RSS + {overhead_mb} MB) <= {MAX_SLACK} for every model "
        f"(gradient checkpointing {'on' if gc else 'off'}, {rows[0]['clips']} training clips, 1 epoch)"
    )
    print("VERDICT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
