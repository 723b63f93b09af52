"""Inference speed per model: fvc's `predict` (fp16 export loaded lean, `infer.precision: auto`) beside plain
forwards of the same model in fp32, fp16 and bf16 (`model.float()/half()/bfloat16()` in memory).

Every model at its config.yaml row, random weights exported with fvc's own fp16 export; the same random
clips in memory through the same DataLoader (batch 8) in every case; each case in a fresh interpreter with
one thread (`benchmarks/fresh.py`), timed from its first forward (cold, like a job). Prints clips/s, the
ratio to the best plain forward (target >= 0.8), each case's peak RSS (the child's VmHWM), the precision
`auto` chose with its probe, and max |dp| of each case vs the plain fp32 forward.
Run: `python benchmarks/infer_speed.py [--models x3d naive_cnn] [--clips 100]` (~6 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
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


def _clips(spec: dict[str, Any]) -> Any:
    import torch

    generator = torch.Generator().manual_seed(0)
    shape = (spec["clips"], spec["num_frames"], 3, spec["size"], spec["size"])
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


def fvc_case(spec: dict[str, Any]) -> dict[str, Any]:
    """fvc: load the export lean, `predict` every clip in `auto` precision."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from fvc.infer.inference import load_export, predict

    clips = _clips(spec)
    loader = DataLoader(TensorDataset(clips, torch.zeros(len(clips))), batch_size=spec["batch_size"])
    model = load_export(spec["weights"])
    start = time.perf_counter()
    probs, ran = predict(model, loader, torch.device("cpu"), "auto")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "probs": probs.tolist(), "precision": ran}


def plain_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Plain forwards of the same weights cast whole to one dtype in memory, over the same data loader."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from fvc.infer.inference import load_export
    from fvc.models import scale_clips

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[spec["dtype"]]
    clips = _clips(spec)
    loader = DataLoader(TensorDataset(clips, torch.zeros(len(clips))), batch_size=spec["batch_size"])
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


def max_dp(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def main() -> int:
    rows = yaml.safe_load((ROOT / "config.yaml").read_text())["models"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(rows), choices=list(rows))
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    print(f"{args.clips} clips, batch {args.batch_size}, 1 thread, each case in a fresh interpreter")
    print(
        f"{'model':<20} {'case':<10} {'clips/s':>8} {'x best':>7} {'peak MB':>8} {'max|dp|':>9}  auto chose"
    )
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            row = rows[name]
            spec = {
                "weights": export(name, row, Path(tmp)),
                "clips": args.clips,
                "batch_size": args.batch_size,
                "num_frames": row["num_frames"],
                "size": row["size"],
            }
            plain = {d: run_fresh("infer_speed:plain_case", {**spec, "dtype": d}, threads=1) for d in PLAIN}
            ours = run_fresh("infer_speed:fvc_case", spec, threads=1)
            best = min(plain, key=lambda d: plain[d]["seconds"])
            reference = plain["fp32"]["probs"]
            cases = {f"plain {d}": plain[d] for d in PLAIN} | {"fvc": ours}
            for case, result in cases.items():
                ratio = plain[best]["seconds"] / result["seconds"]
                chose = ""
                if case == "fvc":
                    ran = result["precision"]
                    probe = "; ".join(
                        f"{t['precision']} " + (t["rejected"] or f"{t['ms_per_batch']:.0f} ms/batch")
                        for t in ran["probe"]
                    )
                    chose = f"{ran['chosen']}  [{probe}]"
                print(
                    f"{name:<20} {case:<10} {args.clips / result['seconds']:>8.1f} {ratio:>7.2f}"
                    f" {result['peak_mb']:>8.0f} {max_dp(result['probs'], reference):>9.2e}  {chose}"
                )
            ratio = plain[best]["seconds"] / ours["seconds"]
            verdicts.append(
                (f"{name}: fvc {ratio:.2f}x the best plain forward ({best}) >= {TARGET}", ratio >= TARGET)
            )
    for text, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
