"""Inference precision: how each compute dtype runs on fp16 storage without an fp32 (or bf16) copy of the
whole model, and the start-of-job probe that picks the fastest accurate one. Which precisions a device
computes in, and their dtypes, are `fvc.core.precision`'s (`check_precision` binds its `resolve` to
`infer.precision`).

Storage stays fp16 (the exports, loaded lean). `fp16` computes on it directly (under fp16 autocast on CUDA).
`fp32` and `bf16` go through `compute_in`: a model whose whole compute copy is at most SMALL_COPY (every
model of the table) is cast once (`cast_whole`: no per-batch hooks or casts); a bigger one goes through
`cast_compute`: each unit (a module with its own tensors, or a fused block such as a Transformer encoder
layer, whose forward reads its children's weights) has its fp16 tensors swapped for compute-dtype copies
for its own forward only, so at most one unit's copy is alive at a time.

`probe` times a few calls per candidate on the job's own batches and takes the fastest accepted one; unlike
training's probe (`fvc.core.precision.probe`, which repeats one step whose result is thrown away), every call
it completes on a new batch is the job's work and kept, and a call runs under a deadline and is cut short
(`TooSlow`) once it cannot win or the probe's time budget is spent.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fvc.core.memory import MB, fix_mmap_threshold
from fvc.core.precision import Precision, resolve

FUSED = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
SMALL_COPY = 8 * MB  # a whole compute copy up to this size is kept for the job instead of cast per unit


def check_precision(requested: str, device: torch.device) -> tuple[Precision, ...]:
    """`infer.precision`'s candidates on `device` (`resolve` for inference: fp16 counts on CPU too); FvcError
    naming the key when `requested` is neither auto nor doable there."""
    return resolve(requested, device, "infer.precision", inference=True)


Slot = tuple[dict[str, Any], str, torch.Tensor]


def _slots(module: nn.Module, recurse: bool) -> list[Slot]:
    owners = module.modules() if recurse else [module]
    return [
        (table, name, tensor)
        for owner in owners
        for table in (owner._parameters, owner._buffers)
        for name, tensor in table.items()
        if tensor is not None and tensor.is_floating_point()
    ]


def units(model: nn.Module) -> list[tuple[nn.Module, list[Slot]]]:
    """The modules cast together and their floating tensors (dict, name, tensor): fused blocks whole, any
    other module its own tensors only."""
    found: list[tuple[nn.Module, list[Slot]]] = []

    def visit(module: nn.Module) -> None:
        fused = isinstance(module, FUSED)
        slots = _slots(module, recurse=fused)
        if slots:
            found.append((module, slots))
        if not fused:
            for child in module.children():
                visit(child)

    visit(model)
    return found


def _unit_bytes(model: nn.Module, dtype: torch.dtype) -> list[int]:
    itemsize = torch.empty(0, dtype=dtype).element_size()
    return [sum(t.numel() for _, _, t in slots) * itemsize for _, slots in units(model)]


def largest_unit_bytes(model: nn.Module, dtype: torch.dtype) -> int:
    """Bytes of the largest unit's copy in `dtype` (works on the meta device)."""
    return max(_unit_bytes(model, dtype), default=0)


def compute_copy_bytes(model: nn.Module, dtype: torch.dtype) -> int:
    """Bytes of the weights' `dtype` copy that `compute_in` holds while the model runs: the whole model's
    when it is at most SMALL_COPY, else the largest unit's (works on the meta device)."""
    sizes = _unit_bytes(model, dtype)
    return sum(sizes) if sum(sizes) <= SMALL_COPY else max(sizes, default=0)


def _init_rnns(modules: Iterable[nn.Module]) -> None:
    for module in modules:
        if isinstance(module, nn.RNNBase):
            module._init_flat_weights()


@contextlib.contextmanager
def compute_in(model: nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """While active, the fp16-stored `model` computes in `dtype` (its input must be `dtype`): on a whole copy
    made once when that is at most SMALL_COPY, else one unit's copy at a time (`cast_compute`, with glibc's
    mmap threshold fixed so each freed copy leaves memory instead of fragmenting the heap)."""
    if sum(_unit_bytes(model, dtype)) <= SMALL_COPY:
        with cast_whole(model, dtype):
            yield
    else:
        fix_mmap_threshold()
        with cast_compute(model, dtype):
            yield


@contextlib.contextmanager
def cast_whole(model: nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """While active, every floating tensor of `model` is a `dtype` copy, made on entry; storage is restored
    on exit (also after an error)."""
    slots = [slot for _, unit_slots in units(model) for slot in unit_slots]
    try:
        for table, name, tensor in slots:
            table[name] = tensor.to(dtype)
        _init_rnns(model.modules())
        yield
    finally:
        for table, name, tensor in slots:
            table[name] = tensor
        _init_rnns(model.modules())


@contextlib.contextmanager
def cast_compute(model: nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """While active, each unit computes with `dtype` copies of its tensors (and floating inputs), made
    before its forward and dropped after it; storage is untouched (restored on exit, also after an error)."""
    live: dict[nn.Module, list[Slot]] = {}

    def cast(value: Any) -> Any:
        is_other = isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype
        return value.to(dtype) if is_other else value

    def restore(module: nn.Module) -> None:
        for table, name, tensor in live.pop(module, ()):
            table[name] = tensor
        _init_rnns([module])

    def before(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        slots = slot_map[module]
        for table, name, tensor in slots:
            table[name] = tensor.to(dtype)
        live[module] = slots
        _init_rnns([module])
        return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}

    def after(module: nn.Module, args: tuple, output: Any) -> None:
        restore(module)

    slot_map = dict(units(model))
    handles = []
    for module in slot_map:
        handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
        handles.append(module.register_forward_hook(after))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module in list(live):
            restore(module)


class TooSlow(Exception):
    """A probed call passed its deadline."""


@contextlib.contextmanager
def deadline(model: nn.Module, seconds: float) -> Iterator[None]:
    """Raise TooSlow at the next module call once `seconds` have passed."""
    end = time.perf_counter() + seconds

    def check(module: nn.Module, args: tuple) -> None:
        if time.perf_counter() > end:
            raise TooSlow

    handles = [module.register_forward_pre_hook(check) for module in model.modules()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class Trial:
    """One candidate's probe: its best timed call (seconds), max |p - p_fp32| on the check batch, and why it
    was not taken (empty when accepted)."""

    precision: str
    seconds: float | None = None
    max_dp: float | None = None
    rejected: str = ""

    def summary(self) -> str:
        """One line for the log: its time per batch, or why it was not taken."""
        if self.rejected:
            return f"{self.precision} {self.rejected}"
        return f"{self.precision} " + (
            "not timed" if self.seconds is None else f"{self.seconds * 1000:.1f} ms/batch"
        )

    def record(self) -> dict[str, Any]:
        """The trial for the log and metrics.json, its time in ms per batch."""
        ms = None if self.seconds is None else round(self.seconds * 1000, 3)
        return {
            "precision": self.precision,
            "ms_per_batch": ms,
            "max_dp": self.max_dp,
            "rejected": self.rejected,
        }


Run = Callable[[str, Any, float], torch.Tensor]


def probe(
    names: Sequence[str],
    run: Run,
    batches: Iterator[Any],
    keep: Callable[[Any, torch.Tensor], None],
    budget_share: float,
    job_calls: int,
    tolerance: float,
    first_item: Callable[[Any], Any],
    repeats: int = 2,
) -> tuple[str, list[Trial], list[Any]]:
    """Time `names` on real batches, the first (the reference) always run: `run(name, batch, seconds)`
    returns the output or raises TooSlow past `seconds`. The reference runs a check batch (warm-up) and
    `repeats` timed ones; every other candidate first runs the check batch's first item alone
    (`first_item(batch)`): one that cannot finish it within the reference's whole-batch time cannot win and
    is dropped there. The deadline is only checked between module calls, so a slow candidate overruns it by
    up to one op, and one op on one item costs a batch's share of that (naive_cnn in bf16 on a CPU without
    bf16 units: 0.5 s per cut batch call, measured). Then it runs the whole check batch (warm-up; max |output
    - reference's| must stay <= `tolerance`) and up to `repeats` timed batches, each cut short once slower
    than the best. Completed calls on new batches are the job's work, handed to `keep(batch, output)`; the
    rest (check calls and cut calls) is the probe's cost, kept within `budget_share` of the job (`job_calls`
    calls at the reference's speed); a job whose budget is less than one reference batch per candidate
    probes none (as training's probe: too small to afford it). Returns the choice, the trials and the batches
    taken but not yet computed."""
    trials = [Trial(names[0], max_dp=0.0)]
    check = next(batches, None)
    if check is None:
        return names[0], trials, []
    reference = run(names[0], check, math.inf)
    keep(check, reference)
    pending: list[Any] = []

    def timed(trial: Trial, limit: float) -> float:
        """Seconds lost to a call cut short (its batch goes back to `pending`)."""
        for _ in range(repeats):
            batch = pending.pop(0) if pending else next(batches, None)
            if batch is None:
                break
            start = time.perf_counter()
            try:
                output = run(trial.precision, batch, limit)
            except TooSlow:
                pending.append(batch)
                trial.rejected = f"slower than {limit * 1000:.1f} ms (the best, or the probe budget left)"
                return time.perf_counter() - start
            keep(batch, output)
            trial.seconds = min(time.perf_counter() - start, trial.seconds or math.inf)
        return 0.0

    timed(trials[0], math.inf)
    best = trials[0].seconds or math.inf
    budget = budget_share * job_calls * (best if best < math.inf else 0.0)
    too_small = best < math.inf and budget < best * (len(names) - 1)
    spent = f"not measured: the probe's budget ({budget_share:.0%} of the job) is spent"
    if too_small:
        spent = (
            f"not measured: job too small to probe ({budget_share:.0%} of it, {budget * 1000:.1f} ms, is less"
            f" than one {names[0]} batch ({best * 1000:.1f} ms) per candidate)"
        )
    for name in names[1:]:
        trial = Trial(name, rejected=spent)
        trials.append(trial)
        if budget <= 0 or too_small:
            continue
        start = time.perf_counter()
        stage = f"one item exceeds the best whole batch ({best * 1000:.1f} ms) or the probe's budget"
        try:
            run(name, first_item(check), min(best, budget))
            stage = "one batch exceeds the probe's budget"
            output = run(name, check, budget - (time.perf_counter() - start))
            trial.max_dp = float((output.float() - reference.float()).abs().max())
            trial.rejected = f"max |dp| {trial.max_dp:.2e} > {tolerance}" if trial.max_dp > tolerance else ""
        except TooSlow:
            trial.rejected = (
                f"not measured: {stage} ({budget * 1000:.1f} ms left of {budget_share:.0%} of the job)"
            )
        except (RuntimeError, NotImplementedError, ValueError) as exc:
            trial.rejected = "failed: " + str(exc).splitlines()[0]
        budget -= time.perf_counter() - start
        if not trial.rejected:
            budget -= timed(trial, min(best, max(budget, 0.0)))
        if not trial.rejected and trial.seconds is None:
            trial.rejected = "not timed: no batch left"
        if not trial.rejected and trial.seconds is not None:
            best = min(best, trial.seconds)
    timed_trials = [t for t in trials if not t.rejected and t.seconds is not None]
    choice = min(timed_trials, key=lambda t: t.seconds or math.inf) if timed_trials else trials[0]
    return choice.precision, trials, pending
