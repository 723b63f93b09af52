"""Inference speed per model: fvc's `predict` (fp16 export loaded lean, `infer.precision: auto`) beside plain
forwards of the same model in fp32, fp16 and bf16 (`model.float()/half()/bfloat16()` in memory).

Every model at its config.yaml row, random weights exported with fvc's own fp16 export; every case reads
the same clips the same way: a DataLoader (batch 8) over a pool of 64 random clips in memory, cycled up to
the model's clip count, which is scaled so a plain fp32 pass takes >= --seconds. Each case runs in its own
fresh interpreter with one thread, all of a model's cases in lockstep (`benchmarks/fresh.py`): fvc's pass p,
then each plain forward's pass p, then fvc's pass p+1, ..., one process running at a time; an fvc pass is a
whole `predict` call (its `auto` probe included), as in a job. After the first round only fvc and the fastest
plain dtype go on, for `--passes` passes in all, `--repeats` times (fresh processes each). The ratio is the
median over the warm passes (2..) of plain seconds / fvc seconds, each pair timed within seconds of the
other, so a change in the machine's speed falls on both (target >= 0.8); `cold` is the same for the first
pass (imports done, first forward included). Prints clips/s (the fastest pass), each case's peak RSS (the
child's VmHWM), the precision `auto` chose with its probe, and max |dp| of each case vs the plain fp32
forward; a case that fails prints its error and the others still run.
Run: `python benchmarks/infer_speed.py [--models x3d naive_cnn] [--seconds 2] [--passes 5] [--repeats 2]`.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import yaml
from fresh import run_lockstep, turn

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
    """fvc: load the export lean, then per turn `predict` every clip in `auto` precision."""
    import torch

    from fvc.infer.inference import load_export, predict

    loader = _loader(spec)
    model = load_export(spec["weights"])
    seconds, first = [], None
    while turn():
        start = time.perf_counter()
        probs, ran = predict(model, loader, torch.device("cpu"), "auto")
        seconds.append(time.perf_counter() - start)
        first = first or {"probs": probs.tolist(), "precision": ran}
    return {"seconds": seconds, **(first or {})}


def plain_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Per turn, plain forwards of the same weights cast whole to one dtype in memory, over the same data
    loader."""
    import torch

    from fvc.infer.inference import load_export
    from fvc.models import scale_clips

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[spec["dtype"]]
    loader = _loader(spec)
    model = load_export(spec["weights"]).to(dtype)
    seconds: list[float] = []
    probs: list[torch.Tensor] = []
    while turn():
        probs = []
        start = time.perf_counter()
        with torch.inference_mode():
            for clips, _ in loader:
                probs.append(torch.sigmoid(model(scale_clips(clips).to(dtype)).float().reshape(-1)))
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "probs": torch.cat(probs).tolist() if probs else []}


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


def run_model(spec: dict[str, Any], passes: int) -> dict[str, dict[str, Any]]:
    """fvc and a plain forward per dtype in lockstep: every case's first pass, then `passes - 1` more of fvc
    and of the plain dtype whose first pass was fastest. Each case's result, or `{"error": ...}` for all
    when one failed (its last line)."""
    cases = {"fvc": ("infer_speed:fvc_case", spec)}
    cases |= {f"plain {d}": ("infer_speed:plain_case", {**spec, "dtype": d}) for d in PLAIN}

    def keep(name: str, rounds: int, seconds: dict[str, list[float]]) -> bool:
        return rounds < passes and name in ("fvc", fastest_plain(seconds))

    try:
        return run_lockstep(cases, threads=1, keep=keep)
    except RuntimeError as exc:
        return {case: {"error": str(exc).strip().splitlines()[-1]} for case in cases}


def fastest_plain(seconds: dict[str, list[float]]) -> str:
    """Of the cases' pass times, the plain case whose first pass was fastest (the one that goes on)."""
    return min((case for case in seconds if case != "fvc"), key=lambda case: seconds[case][0])


def pass_ratios(fvc: list[float], plain: list[float]) -> list[float]:
    """Plain seconds / fvc seconds for each pass both ran."""
    return [p / f for f, p in zip(fvc, plain, strict=False)]


def describe(name: str, case: str, clips: int, runs: list[dict[str, Any]], reference: Any) -> str:
    """One case's line: clips/s of its fastest pass, peak RSS, max |dp| vs plain fp32, what auto chose."""
    rate = clips / min(t for run in runs for t in run["seconds"])
    peak = max(run["peak_mb"] for run in runs)
    dp = max_dp(runs[0]["probs"], reference) if reference else math.nan
    chose = ""
    if case == "fvc":
        ran = runs[0]["precision"]
        probe = "; ".join(
            f"{t['precision']} " + (t["rejected"] or f"{t['ms_per_batch']:.1f} ms/batch")
            for t in ran["probe"]
        )
        chose = f"{ran['chosen']}  [{probe}]"
    return f"{name:<20} {case:<10} {clips:>6} {rate:>8.1f} {peak:>8.0f} {dp:>9.2e}  {chose}"


def main() -> int:
    rows = yaml.safe_load((ROOT / "config.yaml").read_text())["models"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(rows), choices=list(rows))
    parser.add_argument("--clips", type=int, default=100, help="at least this many clips per pass")
    parser.add_argument("--seconds", type=float, default=2.0, help="a plain fp32 pass's least duration")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--passes", type=int, default=5, help="lockstep passes of fvc and the fastest plain")
    parser.add_argument("--repeats", type=int, default=2, help="lockstep runs in fresh processes per model")
    args = parser.parse_args()
    print(f">= {args.clips} clips (plain fp32 pass >= {args.seconds} s), batch {args.batch_size}, 1 thread,")
    print(f"each case in a fresh interpreter, in lockstep: {args.passes} passes x {args.repeats} run(s)")
    print(f"{'model':<20} {'case':<10} {'clips':>6} {'clips/s':>8} {'peak MB':>8} {'max|dp|':>9}  auto chose")
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
            runs = [run_model(spec, args.passes) for _ in range(args.repeats)]
            failed = {case: r["error"] for run in runs for case, r in run.items() if "error" in r}
            if failed:
                for case, error in failed.items():
                    print(f"{name:<20} {case:<10} failed: {error}", flush=True)
                verdicts.append((f"{name}: a case failed", False))
                continue
            reference = runs[0]["plain fp32"]["probs"]
            for case in runs[0]:
                print(describe(name, case, spec["clips"], [run[case] for run in runs], reference), flush=True)
            warm, cold, best = [], [], []
            for run in runs:
                plain = fastest_plain({case: result["seconds"] for case, result in run.items()})
                ratios = pass_ratios(run["fvc"]["seconds"], run[plain]["seconds"])
                cold.append(ratios[0])
                warm += ratios[1:]
                best.append(plain.split()[1])
            ratio = median(warm)
            colds = ", ".join(f"{c:.2f}" for c in cold)
            print(
                f"{name:<20} fvc / {'/'.join(sorted(set(best)))}: warm median {ratio:.2f} "
                f"({min(warm):.2f}-{max(warm):.2f}, {len(warm)} pairs), cold {colds}",
                flush=True,
            )
            verdict = f"{name}: fvc {ratio:.2f}x the fastest plain forward >= {TARGET}"
            verdicts.append((verdict, ratio >= TARGET))
    for text, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
