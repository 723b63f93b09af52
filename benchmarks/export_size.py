"""Export size per fold and in all, before (every fold a full copy) vs after (compact: the frozen backbone
once in `shared/`, each fold only what training changed), for `vit_gru` on a ViT-Base/16-224 backbone.

A random ViT-Base (hidden 768, 12 layers, 12 heads, intermediate 3072, patch 16, image 224) is written with
`save_pretrained` to a temporary folder and used as `vit_gru`'s frozen `backbone`. Each case runs in a fresh
interpreter (`fresh.run_fresh`): `export` builds the model once per fold (a different head per fold, as
training would leave it) and exports the folds full or compact, timing the exports; `load` lean-loads fold 0
of either layout and reports its peak RSS increase over the imports (transformers included) against
benchmarks/load_memory.py's budget (fp16 weights + largest tensor + 64 MB) and whether its tensors equal the
full export's.

Run: `python benchmarks/export_size.py [--folds 3]` (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from fresh import run_fresh
from load_memory import MB, VIT_BASE  # the same ViT-Base/16-224 as the load benchmark

PARAMS = {"gru_hidden": 64}


def _model(backbone: str, seed: int) -> Any:
    import torch

    from fvc.models import build_model

    torch.manual_seed(seed)
    return build_model("vit_gru", {"backbone": backbone, **PARAMS}, 8, 224)


def _fold_files(folder: Path, fold: int) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and p.name.startswith(f"fold{fold}")]


def export_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Export `folds` folds of vit_gru into `out`, full copies or compact."""
    import time

    from fvc.models import export_config
    from fvc.models.freezing import frozen_parameters
    from fvc.weights.export import export_fp16

    out = Path(spec["out"])
    seconds = 0.0
    for fold in range(spec["folds"]):
        model = _model(spec["backbone"], seed=fold)
        frozen = frozen_parameters(model) if spec["compact"] else set()
        start = time.perf_counter()
        export_fp16(model, export_config("vit_gru", model), out / f"fold{fold}.safetensors", frozen=frozen)
        seconds += time.perf_counter() - start
        del model
    per_fold = [sum(p.stat().st_size for p in _fold_files(out, f)) for f in range(spec["folds"])]
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"per_fold_mb": [b / MB for b in per_fold], "total_mb": total / MB, "export_s": seconds}


def load_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Lean-load fold 0 of `out`; peak RSS increase over the loaded imports; equality with `reference`."""
    import torch
    from transformers import ViTModel  # noqa: F401 - imported before the baseline, as load_memory.py does

    from fvc.infer.inference import load_export
    from fvc.weights.lean_load import tensor_infos

    def rss() -> tuple[int, int]:
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024

    weights = Path(spec["out"]) / "fold0.safetensors"
    base, _ = rss()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # peak := current
    model = load_export(weights)
    for tensor in model.state_dict().values():
        tensor.sum()  # touch every weight: memory-mapped ones count as resident
    _, peak = rss()
    infos = tensor_infos(weights).values()
    budget = sum(i.loaded_nbytes() for i in infos) + max(i.nbytes for i in infos) + 64 * MB
    reference = load_export(spec["reference"]).state_dict()
    same = all(torch.equal(t, reference[name]) for name, t in model.state_dict().items())
    return {"load_peak_mb": (peak - base) / MB, "budget_mb": budget / MB, "same_tensors": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, default=3)
    args = parser.parse_args()

    from transformers import ViTConfig, ViTModel

    with tempfile.TemporaryDirectory() as tmp:
        backbone = Path(tmp) / "vit-base"
        ViTModel(ViTConfig(**VIT_BASE), add_pooling_layer=False).save_pretrained(backbone)
        results = {}
        for layout, compact in (("before (full copy per fold)", False), ("after (compact)", True)):
            out = Path(tmp) / ("compact" if compact else "full")
            spec = {"backbone": str(backbone), "folds": args.folds, "out": str(out), "compact": compact}
            results[layout] = run_fresh("export_size:export_case", spec, threads=1)
            reference = str(Path(tmp) / "full" / "fold0.safetensors")
            results[layout] |= run_fresh("export_size:load_case", {"out": str(out), "reference": reference})
        print(f"vit_gru on ViT-Base/16-224 (frozen), {args.folds} folds, fp16 exports")
        print(f"{'layout':30} {'per fold MB':>20} {'all MB':>8} {'export s':>9} {'load MB/budget':>20} same")
        for layout, r in results.items():
            per_fold = " ".join(f"{mb:.1f}" for mb in r["per_fold_mb"])
            print(
                f"{layout:30} {per_fold:>20} {r['total_mb']:8.1f} {r['export_s']:9.1f} "
                f"{r['load_peak_mb']:13.0f} / {r['budget_mb']:.0f} {r['same_tensors']}"
            )
        before, after = results.values()
        print(f"all folds: after / before = {after['total_mb'] / before['total_mb']:.3f}")


if __name__ == "__main__":
    main()
