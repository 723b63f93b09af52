"""Inference speed per model: fvc's `predict` (fp16 export loaded lean, `infer.precision: auto`) beside plain
forwards of the same model in fp32, fp16 and bf16 (`model.float()/half()/bfloat16()` in memory).

Every model at its config.yaml row, random weights exported with fvc's own fp16 export; every case reads
the same clips the same way: a DataLoader (batch 8) over a pool of 64 random clips in memory, cycled up to
the model's clip count, which is scaled so a plain fp32 run takes >= --seconds (a tiny model's run is then
not a few ms of fixed costs). Each case in a fresh interpreter with one thread (`benchmarks/fresh.py`),
timed from its first forward (cold, like a job), `--repeats` times in rounds (every case once per round, so a
change in the machine's load falls on all of them), its fastest run counted: single runs move the ratio by
about 0.1 from one process to the next. Prints clips/s, the ratio to the best plain forward (target >= 0.8),
each case's peak RSS (the child's VmHWM), the precision `auto` chose with its probe, and max |dp| of each
case vs the plain fp32 forward; a case that fails prints its error and the others still run.
Run: `python benchmarks/infer_speed.py [--models x3d naive_cnn] [--clips 100] [--seconds 2] [--repeats 3]`
(~6 minutes per repeat).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from fresh import run_fresh

ROOT = Path(__file__).resolve().parents[1]
PLAIN = ("fp32", "fp16", "bf16")
TARGET = 0.8
POOL = 64


def _loader(spec: dict[str, Any]) -> Any:
    """`spec["clips"]` clips cycled from a pool of POOL random ones, with zero labels, batched."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    generator = torch.Generator().manual_seed(0)
    shape = (min(POOL, spec["clips"]), spec["num_frames"], 3, spec["size"], spec["size"])
    pool = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)

    class Cycled(Dataset):
        def __len__(self) -> int:
            return spec["clips"]

        def __getitem__(self, index: int) -> tuple[Any, int]:
            return pool[index % len(pool)], 0

    return DataLoader(Cycled(), batch_size=spec["batch_size"])


def fvc_case(spec: dict[str, Any]) -> dict[str, Any]:
    """fvc: load the export lean, `predict` every clip in `auto` precision."""
    import torch

    from fvc.infer.inference import load_export, predict

    loader = _loader(spec)
    model = load_export(spec["weights"])
    start = time.perf_counter()
    probs, ran = predict(model, loader, torch.device("cpu"), "auto")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "probs": probs.tolist(), "precision": ran}


def plain_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Plain forwards of the same weights cast whole to one dtype in memory, over the same data loader."""
    import torch

    from fvc.infer.inference import load_export
    from fvc.models import scale_clips

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[spec["dtype"]]
    loader = _loader(spec)
    model = load_export(spec["weights"]).to(dtype)
    probs = []
    start = time.perf_counter()
    with torch.inference_mode():
        for clips, _ in loader:
            probs.append(torch.sigmoid(model(scale_clips(clips).to(dtype)).float().reshape(-1)))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "probs": torch.cat(probs).tolist()}


def export(name: str, row: dict[str, Any], folder: Path) -> str:
    """Random weights of model `name` at its row, exported with fvc's fp16 export."""
    sys.path.insert(0, str(ROOT / "tests"))
    from infer_data import randomize

    from fvc.models import build_model, export_config
    from fvc.weights.export import export_fp16

    model = randomize(build_model(name, row["params"], row["num_frames"], row["size"]), seed=0).eval()
    path = folder / f"{name}.safetensors"
    export_fp16(model, export_config(name, model), path)
    return str(path)


def clip_count(spec: dict[str, Any], least: int, seconds: float) -> int:
    """At least `least` clips, and enough that a plain fp32 run takes about `seconds` (timed here on one
    warm batch, one thread), in whole batches."""
    import torch

    from fvc.infer.inference import load_export
    from fvc.models import scale_clips

    torch.set_num_threads(1)
    model = load_export(spec["weights"]).float()
    clips = next(iter(_loader({**spec, "clips": spec["batch_size"]})))[0]
    with torch.inference_mode():
        model(scale_clips(clips))
        start = time.perf_counter()
        model(scale_clips(clips))
        per_batch = time.perf_counter() - start
    batches = max(math.ceil(least / spec["batch_size"]), math.ceil(seconds / per_batch))
    return batches * spec["batch_size"]


def max_dp(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def run_case(target: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The case's result, or `{"error": ...}` (its last line) when it failed."""
    try:
        return run_fresh(target, spec, threads=1)
    except RuntimeError as exc:
        return {"error": str(exc).strip().splitlines()[-1]}


def fastest(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of a case's runs, or its first error when every run failed."""
    done = [run for run in runs if "error" not in run]
    return min(done, key=lambda run: run["seconds"]) if done else runs[0]


def run_rounds(spec: dict[str, Any], repeats: int) -> dict[str, dict[str, Any]]:
    """Every case (plain per dtype, then fvc) once per round for `repeats` rounds; each case's fastest run."""
    targets = {f"plain {d}": ("infer_speed:plain_case", {**spec, "dtype": d}) for d in PLAIN}
    targets["fvc"] = ("infer_speed:fvc_case", spec)
    runs: dict[str, list[dict[str, Any]]] = {case: [] for case in targets}
    for _ in range(repeats):
        for case, (target, case_spec) in targets.items():
            runs[case].append(run_case(target, case_spec))
    return {case: fastest(found) for case, found in runs.items()}


def main() -> int:
    rows = yaml.safe_load((ROOT / "config.yaml").read_text())["models"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(rows), choices=list(rows))
    parser.add_argument("--clips", type=int, default=100, help="at least this many clips per case")
    parser.add_argument("--seconds", type=float, default=2.0, help="a plain fp32 run's least duration")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="fresh runs per case, in rounds; the fastest")
    args = parser.parse_args()
    print(f">= {args.clips} clips (a plain fp32 run >= {args.seconds} s), batch {args.batch_size}, 1 thread,")
    print(f"each case in a fresh interpreter, the fastest of {args.repeats} run(s) in rounds")
    print(
        f"{'model':<20} {'case':<10} {'clips':>6} {'clips/s':>8} {'x best':>7} {'peak MB':>8} {'max|dp|':>9}"
        "  auto chose",
        flush=True,
    )
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            row = rows[name]
            spec = {
                "weights": export(name, row, Path(tmp)),
                "batch_size": args.batch_size,
                "num_frames": row["num_frames"],
                "size": row["size"],
            }
            spec["clips"] = clip_count(spec, args.clips, args.seconds)
            cases = run_rounds(spec, args.repeats)
            plain = {d: cases[f"plain {d}"] for d in PLAIN}
            done = {d: r for d, r in plain.items() if "error" not in r}
            best = min(done, key=lambda d: done[d]["seconds"]) if done else None
            reference = plain["fp32"].get("probs")
            for case, result in cases.items():
                if "error" in result:
                    print(f"{name:<20} {case:<10} failed: {result['error']}", flush=True)
                    continue
                ratio = done[best]["seconds"] / result["seconds"] if best else math.nan
                dp = max_dp(result["probs"], reference) if reference else math.nan
                chose = ""
                if case == "fvc":
                    ran = result["precision"]
                    probe = "; ".join(
                        f"{t['precision']} " + (t["rejected"] or f"{t['ms_per_batch']:.1f} ms/batch")
                        for t in ran["probe"]
                    )
                    chose = f"{ran['chosen']}  [{probe}]"
                print(
                    f"{name:<20} {case:<10} {spec['clips']:>6} {spec['clips'] / result['seconds']:>8.1f}"
                    f" {ratio:>7.2f} {result['peak_mb']:>8.0f} {dp:>9.2e}  {chose}",
                    flush=True,
                )
            ours = cases["fvc"]
            ratio = done[best]["seconds"] / ours["seconds"] if best and "error" not in ours else math.nan
            verdicts.append(
                (f"{name}: fvc {ratio:.2f}x the best plain forward ({best}) >= {TARGET}", ratio >= TARGET)
            )
    for text, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
