"""Arithmetic precision by measurement: the candidates a device supports, their autocast, and a timing probe.

A precision is `fp32` (no autocast), `bf16` or `fp16` (autocast to that dtype; fp16 training also scales its
loss with a GradScaler). No fixed rule is right everywhere: on a CPU without bf16 units bf16 autocast is ~10x
slower than fp32, on one with them ~3x faster. So `auto` runs `probe`: a few steps of the job's own model and
batch per candidate, timed after a warm-up, each checked against fp32's result; the fastest candidate within
tolerance wins.

API (shared by training and inference):
- `PRECISIONS`, `REQUESTS`: the names; `Precision`: their type.
- `DTYPES`: each precision's torch dtype.
- `candidates(device, inference=...)`: what the device computes in, fp32 first (inference on CPU adds fp16).
- `resolve(requested, device, key, inference=...)`: the candidates for a request, a forced one checked against
  the device (FvcError naming `key`).
- `autocast(precision, device)`: the context a step runs under.
- `probe(step, precisions, budget_steps=...)`: the timing probe; returns a `ProbeResult` (`chosen` + one
  `Figures` per candidate, JSON-able via `as_dict`).
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import torch

from fvc.core.errors import FvcError

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "fp16")
REQUESTS = ("auto", *PRECISIONS)
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

#: Largest accepted deviation from fp32: max |result - fp32 result| / max(1, max |fp32 result|).
TOLERANCE = 0.05
#: A reduced precision must beat fp32's seconds per step by this factor (timing noise prefers the exact one).
MARGIN = 0.95


def candidates(device: torch.device, *, inference: bool = False) -> tuple[Precision, ...]:
    """The precisions `device` computes in, fp32 first: CUDA fp32, bf16 where the GPU supports it, fp16 (none
    when torch sees no GPU); CPU fp32, bf16, and for `inference` also fp16 (training's fp16 needs a
    GradScaler, which a CPU lacks)."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return ()
        with torch.cuda.device(device):
            bf16 = torch.cuda.is_bf16_supported()
        return ("fp32", "bf16", "fp16") if bf16 else ("fp32", "fp16")
    if device.type == "cpu":
        return ("fp32", "bf16", "fp16") if inference else ("fp32", "bf16")
    return ("fp32",)


def resolve(
    requested: str, device: torch.device, key: str, *, inference: bool = False
) -> tuple[Precision, ...]:
    """The candidates for `requested` on `device` (for `inference` or training): all of them for `auto`, else
    the one forced. Raises FvcError naming the config `key` (e.g. `train.precision`) for an unknown precision
    or one the device cannot compute in."""
    if requested not in REQUESTS:
        known = ", ".join(REQUESTS)
        raise FvcError(f"{key} is {requested!r}, an unknown precision: use one of {known}")
    supported = candidates(device, inference=inference)
    if not supported:
        raise FvcError(f"{key} is {requested!r} but {device.type} cannot compute in it: torch sees no GPU")
    if requested == "auto":
        return supported
    if requested not in supported:
        raise FvcError(
            f"{key} is {requested!r} but {device.type} computes in {', '.join(supported)}; "
            "use auto or one of those"
        )
    return (cast(Precision, requested),)


def autocast(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Autocast to `precision` on `device`; fp32 runs without autocast."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


@dataclass
class Figures:
    """One candidate's probe figures: median seconds per timed step (the warm-up's when `steps` is 0; None
    when it did not run), deviation from fp32's result, and why it was not chosen (None for the choice and
    for fp32)."""

    precision: Precision
    seconds_per_step: float | None = None
    steps: int = 0
    deviation: float | None = None
    rejected: str | None = None


@dataclass
class ProbeResult:
    """The probe's choice and every candidate's figures."""

    chosen: Precision
    figures: list[Figures] = field(default_factory=list)

    def as_dict(self) -> list[dict[str, Any]]:
        """The figures as JSON-able rows."""
        return [asdict(f) for f in self.figures]


def deviation(result: torch.Tensor, reference: torch.Tensor) -> float:
    """max |result - reference| / max(1, max |reference|); inf when `result` is not finite."""
    result, reference = result.detach().float().cpu(), reference.detach().float().cpu()
    if not torch.isfinite(result).all():
        return math.inf
    scale = max(1.0, float(reference.abs().max()))
    return float((result - reference).abs().max()) / scale


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def probe(
    step: Callable[[Precision], torch.Tensor],
    precisions: Sequence[Precision],
    *,
    budget_steps: float = math.inf,
    steps: int = 3,
    tolerance: float = TOLERANCE,
    device: torch.device | None = None,
) -> ProbeResult:
    """Choose among `precisions` (fp32 first: the reference) by running `step(precision)`: one step of the
    real work under `autocast(precision)` returning its result (loss, logits...), the same on every call for
    the same precision (no optimizer step; dropout reseeded).

    Per candidate: a warm-up call, whose result is compared with fp32's (a deviating candidate is rejected
    at once), then up to `steps` timed calls (median kept), taken in rounds (fp32, bf16, fp32, bf16...) so a
    change in the machine's speed during the probe falls on every candidate alike. The probe's time stays
    within `budget_steps` of fp32's steps, shared evenly by the candidates: fp32's warm-up and one timed step
    always run, a candidate starts only while a step of fp32's time still fits, takes a timed step only while
    one more fits its share, and its warm-up time stands in (an upper bound) when no timed step fits. Below
    the minimum (warm-up + one step per candidate) nothing runs and fp32 is chosen. The choice: the fastest
    candidate within `tolerance`, a reduced precision only when faster than fp32 by `MARGIN`."""
    if not precisions or precisions[0] != "fp32":
        raise ValueError(f"probe candidates must start with fp32, got {list(precisions)}")
    figures = [Figures(p) for p in precisions]
    if len(precisions) == 1:
        return ProbeResult("fp32", figures)
    if budget_steps < 2 * len(precisions):
        for row in figures[1:]:
            row.rejected = f"job too small to probe (budget {budget_steps:.2g} steps)"
        return ProbeResult("fp32", figures)
    calls: dict[str, list[float]] = {row.precision: [] for row in figures}  # seconds, warm-up first

    def call(row: Figures) -> torch.Tensor:
        started = time.perf_counter()
        result = step(row.precision)
        _sync(device)
        calls[row.precision].append(time.perf_counter() - started)
        return result

    def fits(row: Figures) -> bool:
        """One more timed call (as fast as its fastest) stays within the candidate's share."""
        done = calls[row.precision]
        return len(done) <= steps and sum(done) + min(done) <= share_s

    start = time.perf_counter()
    fp32, reference = figures[0], call(figures[0])
    fp32.deviation = 0.0
    call(fp32)
    share_s = budget_steps * calls["fp32"][1] / len(figures)  # each candidate's part of the budget
    for row in figures[1:]:
        if time.perf_counter() - start + calls["fp32"][1] > share_s * len(figures):
            row.rejected = "over the probe budget"
            continue
        row.deviation = deviation(call(row), reference)
        if row.deviation > tolerance:
            row.rejected = f"deviation {row.deviation:.3g} > tolerance {tolerance}"
    racing = [row for row in figures if row.rejected is None]
    while due := [row for row in racing if fits(row)]:
        for row in due:
            call(row)
    for row in figures:
        if calls[row.precision]:  # else never started (over the budget)
            warm_up, *timed = calls[row.precision]
            row.steps = len(timed)
            row.seconds_per_step = statistics.median_high(timed) if timed else warm_up
    return ProbeResult(_choose(figures), figures)


def _choose(figures: list[Figures]) -> Precision:
    fp32 = figures[0]
    assert fp32.seconds_per_step is not None, "fp32 was timed"
    best, best_s = fp32.precision, fp32.seconds_per_step * MARGIN
    for row in figures[1:]:
        if row.rejected is None and row.seconds_per_step is not None and row.seconds_per_step < best_s:
            best, best_s = row.precision, row.seconds_per_step
    for row in figures[1:]:
        if row.rejected is None and row.precision != best:
            row.rejected = f"slower than {best}" if best != "fp32" else "not faster than fp32 by the margin"
    return best


@contextlib.contextmanager
def no_trace(model: torch.nn.Module, devices: Sequence[int] = ()) -> Iterator[None]:
    """Leave no trace of probe steps on `model` and the RNGs: buffers (e.g. BatchNorm statistics), gradients
    and torch's random state are restored afterwards (parameters must not be updated inside)."""
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    grads = {name: p.grad for name, p in model.named_parameters()}
    with torch.random.fork_rng(devices=list(devices)):
        try:
            yield
        finally:
            with torch.no_grad():
                for name, b in model.named_buffers():
                    b.copy_(buffers[name])
            for name, p in model.named_parameters():
                p.grad = grads[name]
