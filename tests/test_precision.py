"""fvc.core.precision: candidates per device, forced precisions, autocast, and the timing probe."""

from __future__ import annotations

import time

import pytest
import torch

from fvc.core import precision as prec
from fvc.core.errors import FvcError

CPU = torch.device("cpu")


def test_cpu_candidates_and_forced_precisions():
    assert prec.candidates(CPU) == ("fp32", "bf16")
    assert prec.resolve("auto", CPU, "train.precision") == ("fp32", "bf16")
    assert prec.resolve("bf16", CPU, "train.precision") == ("bf16",)
    with pytest.raises(FvcError, match=r"^train\.precision is 'fp16' but cpu computes in fp32, bf16"):
        prec.resolve("fp16", CPU, "train.precision")
    with pytest.raises(FvcError, match=r"^infer\.precision is 'fp8', an unknown precision: use one of auto"):
        prec.resolve("fp8", CPU, "infer.precision")


def test_inference_on_cpu_also_computes_in_fp16_and_one_check_serves_both_keys():
    assert prec.candidates(CPU, inference=True) == ("fp32", "bf16", "fp16")
    assert prec.resolve("auto", CPU, "infer.precision", inference=True) == ("fp32", "bf16", "fp16")
    assert prec.resolve("fp16", CPU, "infer.precision", inference=True) == ("fp16",)
    with pytest.raises(FvcError, match=r"^infer\.precision is 'int8', an unknown precision: use one of auto"):
        prec.resolve("int8", CPU, "infer.precision", inference=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where torch sees no GPU")
def test_cuda_without_a_gpu_computes_in_nothing():
    assert prec.candidates(torch.device("cuda")) == ()
    for requested in ("auto", "fp32"):
        refusal = rf"^train\.precision is '{requested}' but cuda cannot compute in it"
        with pytest.raises(FvcError, match=refusal):
            prec.resolve(requested, torch.device("cuda"), "train.precision")


def test_autocast_computes_in_the_precision():
    x = torch.ones(4, 4)
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        with prec.autocast(name, CPU):
            assert (x @ x).dtype == dtype


def sleeper(seconds: dict[str, float], results: dict[str, torch.Tensor]):
    calls: list[str] = []

    def step(precision: str) -> torch.Tensor:
        calls.append(precision)
        time.sleep(seconds[precision])
        return results[precision]

    return step, calls


def test_probe_takes_the_fastest_candidate_within_tolerance():
    step, calls = sleeper(
        {"fp32": 0.02, "bf16": 0.005}, {"fp32": torch.tensor([2.0]), "bf16": torch.tensor([2.01])}
    )
    result = prec.probe(step, ("fp32", "bf16"), steps=2)
    assert result.chosen == "bf16"
    fp32, bf16 = result.figures
    # warm-up and one timed step of fp32 (the budget's unit), bf16's warm-up, then timed steps in rounds
    assert calls == ["fp32", "fp32", "bf16", "fp32", "bf16", "bf16"] and fp32.steps == bf16.steps == 2
    assert fp32.seconds_per_step >= 0.02 and bf16.seconds_per_step < 0.02
    assert bf16.deviation == pytest.approx(0.005, rel=1e-3) and bf16.rejected is None
    assert result.as_dict()[1]["precision"] == "bf16"


def test_probe_rejects_a_deviating_or_slower_candidate():
    results = {"fp32": torch.tensor([1.0, -3.0]), "bf16": torch.tensor([1.0, -2.0])}
    fast_but_wrong = prec.probe(sleeper({"fp32": 0.01, "bf16": 0.0}, results)[0], ("fp32", "bf16"), steps=1)
    assert fast_but_wrong.chosen == "fp32"
    assert fast_but_wrong.figures[1].rejected.startswith("deviation 0.333 > tolerance")
    same = {"fp32": torch.tensor([1.0]), "bf16": torch.tensor([1.0])}
    slow = prec.probe(sleeper({"fp32": 0.0, "bf16": 0.01}, same)[0], ("fp32", "bf16"), steps=1)
    assert slow.chosen == "fp32" and slow.figures[1].rejected == "not faster than fp32 by the margin"
    nan = {"fp32": torch.tensor([1.0]), "bf16": torch.tensor([float("nan")])}
    assert prec.probe(sleeper({"fp32": 0.01, "bf16": 0.0}, nan)[0], ("fp32", "bf16")).chosen == "fp32"


def test_probe_stays_within_its_budget():
    same = {"fp32": torch.tensor([1.0]), "bf16": torch.tensor([1.0])}
    step, calls = sleeper({"fp32": 0.01, "bf16": 0.0}, same)
    tiny = prec.probe(step, ("fp32", "bf16"), budget_steps=3)
    assert calls == [] and tiny.chosen == "fp32" and tiny.figures[1].rejected.startswith("job too small")
    step, calls = sleeper({"fp32": 0.01, "bf16": 0.1}, same)
    started = time.perf_counter()
    result = prec.probe(step, ("fp32", "bf16"), budget_steps=6, steps=5)
    # ~3 fp32 steps (30 ms) each: bf16's 100 ms warm-up leaves no room for a timed step.
    assert 2 <= calls.count("fp32") <= 4 and calls.count("bf16") == 1 and result.figures[1].steps == 0
    assert result.figures[1].seconds_per_step >= 0.1 and result.chosen == "fp32"
    assert time.perf_counter() - started < 0.4


def test_no_trace_restores_buffers_gradients_and_rng():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3), torch.nn.Dropout(0.5))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    with prec.no_trace(model):
        model(torch.randn(8, 3)).sum().backward()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
