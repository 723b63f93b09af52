"""benchmarks/fresh.py's lockstep: cases in fresh processes take turns, one running at a time, and a case
told to stop sees `turn()` return False."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from fresh import run_lockstep, turn  # noqa: E402


def units_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Up to `spec['units']` units of `spec['seconds']` busy work, each in a turn: their start and end."""
    spans = []
    for _ in range(spec["units"]):
        if not turn():
            break
        start = time.time()
        while time.time() - start < spec["seconds"]:
            pass
        spans.append((start, time.time()))
    if spec.get("fail"):
        raise ValueError("this case fails")
    return {"spans": spans}


def test_cases_take_turns_one_at_a_time_in_rounds():
    case = ("test_lockstep:units_case", {"units": 3, "seconds": 0.05})
    ran = run_lockstep({"a": case, "b": case, "c": case})
    spans = sorted((start, end, name) for name, result in ran.items() for start, end in result["spans"])
    assert [name for *_, name in spans] == ["a", "b", "c"] * 3
    assert all(end <= next_start for (_, end, _), (next_start, *_) in zip(spans, spans[1:], strict=False))
    assert all(result["peak_mb"] > 0 for result in ran.values())


def test_a_case_told_to_stop_sees_turn_return_false_and_the_others_go_on():
    seen: list[tuple[str, int, dict[str, int]]] = []

    def keep(name: str, rounds: int, seconds: dict[str, list[float]]) -> bool:
        seen.append((name, rounds, {case: len(times) for case, times in seconds.items()}))
        return name == "a"

    case = ("test_lockstep:units_case", {"units": 4, "seconds": 0.01})
    ran = run_lockstep({"a": case, "b": case}, keep=keep)
    assert [len(ran[name]["spans"]) for name in ("a", "b")] == [4, 1]
    assert seen[:2] == [("a", 1, {"a": 1, "b": 1}), ("b", 1, {"a": 2, "b": 1})]


def test_a_failing_case_is_named_with_its_error():
    cases = {
        "ok": ("test_lockstep:units_case", {"units": 2, "seconds": 0.01}),
        "broken": ("test_lockstep:units_case", {"units": 1, "seconds": 0.01, "fail": True}),
    }
    with pytest.raises(RuntimeError, match=r"(?s)lockstep case broken failed.*this case fails"):
        run_lockstep(cases)
