"""Peak memory and speed of training every model at its config.yaml row, against the row's mem_mb, with
gradient checkpointing on and off.

Each model trains one epoch of fold 0 on demo-like clips (24 videos x 3 clips of 8 x 64 x 64, as the demo's
augment stage makes them) in a fresh interpreter (`benchmarks/fresh.py`: peak RSS from the child's own
VmHWM), one thread, in fp32, once with gradient checkpointing on and once off. The table's mem_mb must cover
the peak at the row's own `gradient_checkpointing` + Snakemake's per-job overhead
(`resources.snakemake_overhead_mb`) with at most 40 % slack: 1.0 <= mem_mb / (peak + overhead) <= 1.4.
A row needs checkpointing only where its peak without it would not fit its mem_mb.
Run: `.venv/bin/python benchmarks/train_memory.py [--models a b]`.

`--preset full` measures the real-size rows of configs/full.yaml (merged over config.yaml, as Snakemake
merges --configfile) instead: each row trains one epoch of fold 0 on 224 px clips, only a few steps (1.5
batches of training clips, at least 4; a ViT row's `backbone` folder is replaced by a random ViT of its
`vit` shape, frozen), at its own gradient checkpointing, beside the demo row of the same model. It prints the
measured peak, the mem_mb it calls for (`suggest_mem_mb`: the rule in configs/full.yaml's comment) and the
GPU memory estimate for `vram_mb` (`vram_estimate_mb`); the verdict is the same 1.0-1.4 band.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fresh import run_fresh
from setups import ROOT, merged_config, training_set

from fvc.core.config import model_specs
from fvc.slurm.memory_keys import snakemake_overhead_mb

MAX_SLACK = 1.4
PRESETS = {"full": ROOT / "configs" / "full.yaml"}
MEM_MARGIN = 1.15  # mem_mb of a preset row: (peak + overhead) x MEM_MARGIN, rounded up to 100 MB
CUDA_CONTEXT_MB = 500  # CUDA context and allocator slack of a GPU job, beside the estimated tensors
MB = 1024 * 1024


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


def gpu_case(args: dict[str, Any]) -> dict[str, float]:
    """MB of a training step on a GPU, estimated from one step on the CPU: fp32 weights of the whole model,
    AdamW's two moments of its trainable part, and the step's own peak (forward and backward of one batch:
    activations, transients and gradients), measured as the rise of this process's peak RSS above its RSS
    with the model built (freed buffers unmapped at once, the peak reset first). A case of its own: its
    tensors must not raise the training case's peak."""
    import psutil
    import torch

    from fvc.core.config import ModelSpec
    from fvc.core.memory import fix_mmap_threshold, peak_rss_bytes
    from fvc.models import build_model

    fix_mmap_threshold()
    spec = ModelSpec(**args["spec"])
    torch.manual_seed(0)
    model = build_model(spec.name, spec.params, spec.num_frames, spec.size).train()
    model.set_gradient_checkpointing(spec.gradient_checkpointing)
    clips = torch.rand(spec.batch_size, spec.num_frames, 3, spec.size, spec.size)
    labels = torch.zeros(spec.batch_size)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = psutil.Process().memory_info().rss
    model.loss_fn(model(clips), labels).backward()
    step = peak_rss_bytes() - before
    params = list(model.parameters())
    return {
        "weights_mb": 4 * sum(p.numel() for p in params) / MB,
        "optimizer_mb": 8 * sum(p.numel() for p in params if p.requires_grad) / MB,
        "step_mb": (step + clips.nbytes) / MB,
    }


def suggest_mem_mb(peak_mb: float, overhead_mb: int) -> int:
    """A preset row's mem_mb: (peak + overhead) x MEM_MARGIN, rounded up to 100 MB."""
    return math.ceil((peak_mb + overhead_mb) * MEM_MARGIN / 100) * 100


def vram_estimate_mb(case: dict[str, float]) -> int:
    """A GPU row's vram_mb estimate: (weights + AdamW moments + step peak) x MEM_MARGIN + the CUDA context,
    rounded up to 100 MB."""
    tensors = case["weights_mb"] + case["optimizer_mb"] + case["step_mb"]
    return math.ceil((tensors * MEM_MARGIN + CUDA_CONTEXT_MB) / 100) * 100


def measurable(spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` with a ViT `backbone` folder replaced by a random frozen ViT of its `vit` shape (the same
    tensors, no folder needed), one epoch."""
    params = dict(spec["params"])
    if params.pop("backbone", None):
        params["freeze_backbone"] = params.get("freeze_backbone", True)
    return {**spec, "params": params, "epochs": 1}


def verdict(mem_mb: int, needed: float) -> tuple[float, str]:
    ratio = mem_mb / needed
    return ratio, "OK" if 1.0 <= ratio <= MAX_SLACK else ("TOO LOW" if ratio < 1.0 else "TOO MUCH SLACK")


def measure_preset(preset: str, models: list[str] | None, tmp: Path) -> bool:
    """The preset's rows beside config.yaml's demo rows: peaks, suggested mem_mb and vram_mb. True if every
    preset row's mem_mb is in the band."""
    import yaml

    base = str(ROOT / "config.yaml")
    names = models or list(yaml.safe_load(PRESETS[preset].read_text())["models"])
    _, demo_specs, demo_data = training_set(base, tmp / "demo", videos=24)
    config = merged_config(base, str(PRESETS[preset]))
    specs = model_specs(config)
    overhead_mb = snakemake_overhead_mb(config)
    print(
        f"{'model':<19} {'demo mem_mb':>11} {'demo peak':>9} | {'shape':>16} {'gc':>3} {'mem_mb':>7} "
        f"{'peak':>6} {f'+{overhead_mb}':>6} {'ratio':>5} {'suggest':>7} | {'vram_mb':>7} {'estimate':>8} "
        f"{'w+adam+step MB':>16}  verdict",
        flush=True,
    )
    ok = True
    for name in names:
        full, demo = asdict(specs[name]), asdict(demo_specs[name])
        videos = max(4, math.ceil(1.5 * full["batch_size"]))
        train_clips = videos - 2 * math.ceil(videos / 6)  # fold 0 validates videos v with (v // 2) % 3 == 0
        _, _, data = training_set(
            base, tmp / f"{preset}-{name}", videos, overlay=str(PRESETS[preset]), augmentations=0
        )
        demo_case = run_fresh(
            "train_memory:case",
            {
                "spec": {**demo, "epochs": 1},
                **demo_data,
                "gc": demo["gradient_checkpointing"],
                "out": f"{tmp}/d-{name}",
            },
            threads=1,
        )
        own = run_fresh(
            "train_memory:case",
            {
                "spec": measurable(full),
                **data,
                "gc": full["gradient_checkpointing"],
                "out": f"{tmp}/f-{name}",
            },
            threads=1,
        )
        gpu = run_fresh("train_memory:gpu_case", {"spec": measurable(full)}, threads=1)
        needed = own["peak_mb"] + overhead_mb
        ratio, row_verdict = verdict(full["mem_mb"], needed)
        ok &= row_verdict == "OK"
        shape = f"{full['num_frames']}x{full['size']} b{full['batch_size']}x{full['grad_accum_steps']}"
        terms = f"{gpu['weights_mb']:.0f}+{gpu['optimizer_mb']:.0f}+{gpu['step_mb']:.0f}"
        vram = str(full["vram_mb"]) if full["gpus"] else "-"
        print(
            f"{name:<19} {demo['mem_mb']:>11} {demo_case['peak_mb']:>9.0f} | {shape:>16} "
            f"{'on' if full['gradient_checkpointing'] else 'off':>3} {full['mem_mb']:>7} "
            f"{own['peak_mb']:>6.0f} "
            f"{needed:>6.0f} {ratio:>5.2f} {suggest_mem_mb(own['peak_mb'], overhead_mb):>7} | {vram:>7} "
            f"{vram_estimate_mb(gpu):>8} {terms:>16}  {row_verdict} ({train_clips} training clips, "
            f"{own['wall_s']:.0f} s)",
            flush=True,
        )
    print(
        f"\nmem_mb: 1.00 <= mem_mb / (CPU peak RSS + {overhead_mb} MB) <= {MAX_SLACK}; suggest = (peak + "
        f"{overhead_mb}) x {MEM_MARGIN} rounded up to 100 MB. vram estimate = (fp32 weights + AdamW moments "
        f"of the trainable part + one step's peak on the CPU, gradients included) x {MEM_MARGIN} + "
        f"{CUDA_CONTEXT_MB} MB CUDA context (1 epoch, fp32, one thread)"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="measure a real-size preset")
    args = parser.parse_args()
    if args.preset:
        with tempfile.TemporaryDirectory() as tmp:
            ok = measure_preset(args.preset, args.models, Path(tmp))
        print("VERDICT:", "PASS" if ok else "FAIL")
        return 0 if ok else 1
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
