"""Peak memory of loading a ViT-Base-sized model three ways, each in a fresh subprocess, side by side:

(a) naive: normally built fp32 model + `safetensors.torch.load_file` + `load_state_dict` (fp32);
(b) transformers `ViTModel.from_pretrained(folder, dtype=torch.float16)`;
(c) fvc's lean loader (`fvc.weights.lean_load.lean_load`) from an fvc fp16 export;
(d) (c) followed by a forward of one image in fp32 computed from the fp16 storage (`cast_compute`: one
    layer's fp32 copy at a time), checked against fp16 weights + the largest layer in fp32 + activations.

Each child imports torch + transformers + fvc first, resets its peak RSS (`/proc/self/clear_refs`), loads,
then touches every weight (a sum per tensor, so memory-mapped weights count as resident), and reports its
peak RSS increase. Also checks fp16 vs fp32 predictions of small fvc models.
Run: `python benchmarks/load_memory.py` (about 4 minutes on 2 cores).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import ViTConfig, ViTModel

from fvc.infer.inference import load_export, predict
from fvc.infer.precision import largest_unit_bytes
from fvc.models import build_model, export_config
from fvc.weights.export import export_fp16

MB = 1024 * 1024
VIT_BASE = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "image_size": 224,
    "patch_size": 16,
}

CHILD = r"""
import json, resource, sys, torch, transformers
from safetensors.torch import load_file
from transformers import ViTConfig, ViTModel
from fvc.infer.precision import cast_compute
from fvc.weights.lean_load import lean_load

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith(("VmHWM", "VmRSS")):
            yield int(line.split()[1]) * 1024

method, folder = sys.argv[1], sys.argv[2]
config = ViTConfig.from_pretrained(folder)
_, base = sorted(hwm())  # VmRSS after imports (VmHWM >= VmRSS)
open("/proc/self/clear_refs", "w").write("5")  # peak := current
if method == "naive":
    model = ViTModel(config)
    model.load_state_dict(load_file(folder + "/fp32.safetensors"))
elif method == "from_pretrained":
    model = ViTModel.from_pretrained(folder, dtype=torch.float16)
else:
    model = lean_load(lambda: ViTModel(config), folder + "/fp16.safetensors")
with torch.inference_mode():
    touched = sum(float(t.sum()) for t in model.state_dict().values())
    if method == "lean_fp32_compute":
        with cast_compute(model, torch.float32):
            model(torch.rand(1, 3, 224, 224))
peak = max(hwm())
print(json.dumps({"peak_increase": peak - base, "dtype": str(next(model.parameters()).dtype)}))
"""


def run_child(method: str, folder: Path) -> dict:
    """Load with `method` in a fresh interpreter; its peak RSS increase over the post-import baseline."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, method, str(folder)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_checkpoints(folder: Path) -> tuple[int, int, int]:
    """Random ViT-Base weights saved once as fp32 safetensors, a save_pretrained folder and an fvc fp16
    export; returns (fp16 bytes, largest fp16 tensor bytes, largest layer's fp32 bytes)."""
    model = ViTModel(ViTConfig(**VIT_BASE)).eval()
    state = model.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "fp32.safetensors")
    model.save_pretrained(folder)
    export_fp16(model, {}, folder / "fp16.safetensors")
    fp16 = sum(t.numel() * 2 for t in state.values())
    largest = max(t.numel() * 2 for t in state.values())
    return fp16, largest, largest_unit_bytes(model, torch.float32)


def fp16_agreement(folder: Path) -> list[tuple[str, float, bool]]:
    """Per small fvc model: max |p_fp16 - p_fp32| over 32 random clips, and whether every label agrees."""
    generator = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (32, 4, 3, 32, 32), dtype=torch.uint8, generator=generator)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(clips, torch.zeros(32)), batch_size=8)
    rows = []
    for name in ("logistic_regression", "naive_cnn", "vit_gru", "vit_transformer", "x3d"):
        model = build_model(name, {}, 4, 32).eval()
        path = folder / f"{name}.safetensors"
        export_fp16(model, export_config(name, model), path)
        with torch.inference_mode():
            p32 = torch.sigmoid(model(clips.float() / 255)).numpy()
        p16, ran = predict(load_export(path), loader, torch.device("cpu"), "fp16", desc=name)
        same_labels = bool(((p16 >= 0.5) == (p32 >= 0.5)).all())
        rows.append((f"{name} ({ran['chosen']})", float(abs(p16 - p32).max()), same_labels))
    return rows


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fp16, largest, layer32 = make_checkpoints(folder)
        methods = ("naive", "from_pretrained", "lean", "lean_fp32_compute")
        results = {m: run_child(m, folder) for m in methods}
        agreement = fp16_agreement(folder)
    a, b, c, d = (results[m]["peak_increase"] for m in methods)
    print(
        f"ViT-Base-sized ViTModel: {fp16 / MB:.0f} MB fp16 ({2 * fp16 / MB:.0f} MB fp32), "
        f"largest tensor {largest / MB:.1f} MB fp16"
    )
    print(f"{'method':<44} {'peak RSS increase':>18} {'weights':>8}")
    labels = {
        "naive": "(a) load_file + load_state_dict, fp32",
        "from_pretrained": "(b) from_pretrained fp16",
        "lean": "(c) fvc lean_load, fp16 export",
        "lean_fp32_compute": "(d) (c) + a forward in fp32 compute",
    }
    for method, label in labels.items():
        print(f"{label:<44} {results[method]['peak_increase'] / MB:>15.0f} MB {results[method]['dtype']:>14}")
    budget = fp16 + largest + 64 * MB
    verdicts = [
        (f"(c) <= fp16 + largest tensor + 64 MB = {budget / MB:.0f} MB", c <= budget),
        (
            f"(d) {d / MB:.0f} MB <= fp16 + largest tensor + largest layer in fp32 ({layer32 / MB:.1f} MB)"
            f" + 64 MB activations = {(budget + layer32) / MB:.0f} MB",
            d <= budget + layer32,
        ),
        (f"(a)/(c) = {a / c:.2f} >= 1.8", a / c >= 1.8),
        (f"(c) {c / MB:.0f} MB <= (b) {b / MB:.0f} MB", c <= b),
    ]
    for name, max_diff, same in agreement:
        text = f"fp16 vs fp32 {name}: max |dp| {max_diff:.2e} < 1e-2, labels identical"
        verdicts.append((text, max_diff < 1e-2 and same))
    for text, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
