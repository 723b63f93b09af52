"""CUDA check: every model of config.yaml trains a few steps in fp16 (with a GradScaler) and in bf16, is
exported to fp16, lean-loaded back onto the GPU and run as inference runs it (fp16 autocast on CUDA); its
peak GPU memory is printed beside the inference pre-flight's estimate of GPU memory
(`fvc.infer.preflight.estimate(...).device_total`).

    python benchmarks/cuda_check.py                 # on a machine with a GPU (exits 0 with a line if none)
    python benchmarks/cuda_check.py --device cpu    # the same steps on the CPU (bf16 only): a smoke test

Each model runs in a fresh interpreter (`fresh.run_fresh`), so its peaks are its own. A failing step or a
non-finite prediction is a failed check (exit 1); the table shows which model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MB = 1024 * 1024


def case(spec: dict[str, Any]) -> dict[str, Any]:
    """Train, export, lean-load and infer one model on `spec['device']`; peaks in MB (GPU only)."""
    import torch

    from fvc.core import precision as prec
    from fvc.core.config import load_config, model_specs
    from fvc.infer.inference import Runner, load_export
    from fvc.infer.precision import compute_copy_bytes
    from fvc.infer.preflight import estimate
    from fvc.models import build_model, export_config, scale_clips
    from fvc.weights.export import export_fp16

    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    row = model_specs(load_config(ROOT / "config.yaml"))[spec["model"]]
    shape = (row.batch_size, row.num_frames, 3, row.size, row.size)
    clips = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    labels = torch.randint(0, 2, (row.batch_size,), device=device)
    result: dict[str, Any] = {"model": row.name}
    for precision in spec["precisions"]:
        torch.manual_seed(0)
        model = build_model(row.name, row.params, row.num_frames, row.size).to(device)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=row.lr)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        for _ in range(spec["steps"]):
            with prec.autocast(precision, device):
                loss = model.loss_fn(model(scale_clips(clips)), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        result[f"{precision}_loss"] = float(loss)
        result[f"{precision}_train_peak_mb"] = torch.cuda.max_memory_allocated() / MB if cuda else None
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp, "fold0.safetensors")
        export_fp16(model.cpu(), export_config(row.name, model), weights)
        del model, optimizer
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        loaded = load_export(weights, device).eval()
        dtype = torch.bfloat16 if spec["infer_precision"] == "bf16" else torch.float16
        need = estimate(
            [weights], row.batch_size, row.num_frames, row.size, compute_copy_bytes(loaded, dtype)
        )
        with torch.inference_mode(), Runner(loaded, device) as run:
            probabilities = run(spec["infer_precision"], clips)
        result["infer_finite"] = bool(torch.isfinite(probabilities).all())
        result["infer_peak_mb"] = torch.cuda.max_memory_allocated() / MB if cuda else None
        result["preflight_gpu_mb"] = need.device_total / MB
    return result


def _cell(value: object) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (bf16 only: a smoke test)")
    parser.add_argument("--models", nargs="*", help="models of config.yaml (default: every row)")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import torch
    from fresh import run_fresh

    from fvc.core.config import load_config

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        build = f"torch {torch.__version__}, CUDA build {torch.version.cuda}"
        print(f"no CUDA device: {build} sees no GPU; nothing checked")
        return 0
    cuda = args.device.startswith("cuda")
    spec = {
        "device": args.device,
        "steps": args.steps,
        "precisions": ["fp16", "bf16"] if cuda else ["bf16"],
        "infer_precision": "fp16" if cuda else "bf16",
    }
    models = args.models or list(load_config(ROOT / "config.yaml")["models"])
    if cuda:
        print(
            f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
        )
    columns = ("model", "precision", "loss", "train peak MB", "infer peak MB", "pre-flight MB")
    print(f"{columns[0]:<20}" + "".join(f"{c:>15}" for c in columns[1:]))
    failed = False
    for name in models:
        try:
            r = run_fresh("cuda_check:case", {**spec, "model": name}, threads=1)
        except RuntimeError as exc:
            print(f"{name:<20}FAILED: {str(exc).splitlines()[-1]}")
            failed = True
            continue
        for precision in spec["precisions"]:
            cells = (precision, r[f"{precision}_loss"], r[f"{precision}_train_peak_mb"], r["infer_peak_mb"])
            cells += (r["preflight_gpu_mb"],)
            print(f"{name:<20}" + "".join(f"{_cell(c):>15}" for c in cells))
        failed |= not r["infer_finite"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
