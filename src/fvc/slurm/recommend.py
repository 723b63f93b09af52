"""Right-sized mem_mb per rule and model, and vram_mb / gpus per GPU model, from the audit rows: a YAML
snippet, or edits to the config."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from fvc.core.atomic import atomic_path
from fvc.core.config import load_config
from fvc.slurm.jobs import id_order
from fvc.slurm.memory_keys import MODEL_KEYS, configured_mem_mb, snakemake_overhead_mb

ROUND_MB = 100


@dataclass(frozen=True)
class Recommendation:
    """Right-sized value of one config number (`models.<model>.<key>` or `resources.<rule>.mem_mb`)."""

    table: str
    row: str
    key: str
    current: int | None
    recommended: int
    action: str  # lower | raise | keep | raise-oom
    reason: str


def _round_up(value: float) -> int:
    return int(math.ceil(value / ROUND_MB) * ROUND_MB)


def recommend(rows: Iterable[dict], config: dict, safety_factor: float = 1.2) -> list[Recommendation]:
    """Per rule (and per model for train/infer): peak over successful jobs x safety factor, rounded up to
    100 MB and never below the per-job Snakemake overhead; rules that only ran out of memory get last
    request x memory_growth."""
    groups: dict[tuple[str, str | None], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["rule"], row["model"]), []).append(row)
    growth = config.get("memory_growth", 1.5)
    floor = _round_up(snakemake_overhead_mb(config))
    recs = []
    for (rule, model), members in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        if rule in MODEL_KEYS:
            if model is None:
                continue
            table, row_name, key = "models", model, MODEL_KEYS[rule]
        elif isinstance(config.get("resources", {}).get(rule), dict):
            table, row_name, key = "resources", rule, "mem_mb"
        else:
            continue
        current = configured_mem_mb(config, rule, model)
        ok = [r["peak_mem_mb"] for r in members if r["state"] == "COMPLETED" and r["peak_mem_mb"] is not None]
        ooms = [r for r in members if r["state"] == "OUT_OF_MEMORY" and r["req_mem_mb"]]
        if ok:
            peak = max(ok)
            value = max(_round_up(peak * safety_factor), floor)
            action = "keep" if value == current else "lower" if current and value < current else "raise"
            reason = f"{rule}: peak {peak:.0f} MB over {len(ok)} successful job(s) x {safety_factor}"
            worst = max((r["req_mem_mb"] for r in ooms), default=0)
            if worst >= value:  # another job of this group ran out of memory at least this high
                value, action = _round_up(worst * growth), "raise"
                reason += f", but out of memory at {worst:.0f} MB: x{growth}"
        elif ooms:
            last = max(ooms, key=lambda r: id_order(r["job_id"]))
            value, action = _round_up(last["req_mem_mb"] * growth), "raise-oom"
            reason = (
                f"{rule}: no successful job; out of memory at {last['req_mem_mb']:.0f} MB "
                f"(job {last['job_id']}): raise to x{growth}"
            )
        else:
            continue
        recs.append(Recommendation(table, row_name, key, current, value, action, reason))
    return recs + recommend_gpu(rows, config, safety_factor)


def recommend_gpu(rows: Iterable[dict], config: dict, safety_factor: float = 1.2) -> list[Recommendation]:
    """Per model, over its successful train and infer jobs: `vram_mb` = GPU peak x safety factor (rounded up
    to 100 MB; any gpu_model with that much memory fits), and `gpus: 0` when every job that held a GPU ran
    without CUDA (flag `GPU unused`)."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row["rule"] in MODEL_KEYS and row["model"] is not None and row["state"] == "COMPLETED":
            groups.setdefault(row["model"], []).append(row)
    recs = []
    for model, members in sorted(groups.items()):
        current = config.get("models", {}).get(model, {})
        peaks = [r["gpu_peak_mb"] for r in members if r.get("gpu_peak_mb") is not None]
        if peaks:
            value = _round_up(max(peaks) * safety_factor)
            now = current.get("vram_mb")
            action = "keep" if value == now else "lower" if now and value < now else "raise"
            reason = (
                f"GPU peak {max(peaks):.0f} MB over {len(peaks)} successful job(s) x {safety_factor}; any "
                f"gpu_model with {value} MB or more fits"
            )
            recs.append(Recommendation("models", model, "vram_mb", now, value, action, reason))
        held = [r for r in members if r.get("gpus")]
        if held and all("GPU unused" in (r["flag"] or "") for r in held):
            reason = (
                f"{len(held)} job(s) held {held[0]['gpus']} GPU(s) each but ran without CUDA (torch saw no "
                f"GPU): 0 frees the GPU, or make torch see it"
            )
            recs.append(Recommendation("models", model, "gpus", current.get("gpus"), 0, "lower", reason))
    return recs


def snippet(recs: Iterable[Recommendation]) -> str:
    """The recommendations as YAML in the shape of config.yaml's `models:` and `resources:` tables."""
    tables: dict[str, dict[str, dict[str, int]]] = {}
    reasons: dict[tuple[str, str], list[str]] = {}
    for rec in recs:
        tables.setdefault(rec.table, {}).setdefault(rec.row, {})[rec.key] = rec.recommended
        reasons.setdefault((rec.table, rec.row), []).append(f"{rec.action}: {rec.reason}")
    lines = ["# fvc audit: right-sized memory (MB); `fvc audit --apply` writes these into config.yaml"]
    for table in ("models", "resources"):
        if table not in tables:
            continue
        lines.append(f"{table}:")
        for row, values in tables[table].items():
            inner = ", ".join(f"{k}: {v}" for k, v in values.items())
            lines.append(f"  {row}: {{{inner}}}  # {'; '.join(reasons[(table, row)])}")
    return "\n".join(lines) + "\n"


def _block_end(lines: list[str], start: int, indent: int, stop: int) -> int:
    """Index of the first line after `start` (up to `stop`) that is indented no deeper than `indent`."""
    for i in range(start + 1, stop):
        stripped = lines[i].lstrip()
        if stripped and not stripped.startswith("#") and len(lines[i]) - len(stripped) <= indent:
            return i
    return stop


def edit_config_text(text: str, recs: Iterable[Recommendation], source: str = "config.yaml") -> str:
    """config.yaml's text with the recommended numbers written in place; comments and layout kept."""
    recs = list(recs)
    lines = text.splitlines(keepends=True)
    for rec in recs:
        top = next((i for i, line in enumerate(lines) if re.match(rf"{rec.table}:\s*(#.*)?$", line)), None)
        if top is None:
            raise ValueError(f"{source}: no top-level `{rec.table}:` table")
        end = _block_end(lines, top, 0, len(lines))
        row = next(
            (i for i in range(top + 1, end) if re.match(rf"\s+{re.escape(rec.row)}\s*:", lines[i])), None
        )
        if row is None:
            raise ValueError(f"{source}: `{rec.table}` has no row `{rec.row}`")
        row_indent = len(lines[row]) - len(lines[row].lstrip())
        row_end = _block_end(lines, row, row_indent, end)
        block = "".join(lines[row:row_end])
        new_block, count = re.subn(
            rf"(?<![\w-])({re.escape(rec.key)}\s*:\s*)(\d+|null)", rf"\g<1>{rec.recommended}", block
        )
        if count == 0 and "{" in block:  # a key the flow-style row leaves at its default (e.g. vram_mb)
            new_block, count = block.replace("{", f"{{{rec.key}: {rec.recommended}, ", 1), 1
        if count != 1:
            raise ValueError(
                f"{source}: `{rec.table}.{rec.row}` has {count} `{rec.key}:` numbers, expected 1"
            )
        lines[row:row_end] = new_block.splitlines(keepends=True)
    new_text = "".join(lines)
    new = yaml.safe_load(new_text)
    for rec in recs:
        if new[rec.table][rec.row][rec.key] != rec.recommended:
            raise ValueError(f"{source}: editing {rec.table}.{rec.row}.{rec.key} failed")
    return new_text


def apply_recommendations(config_path: str | Path, recs: list[Recommendation]) -> str:
    """Write the recommendations into the config file (validated first, atomically); return the diff."""
    path = Path(config_path)
    old = path.read_text()
    new = edit_config_text(old, [r for r in recs if r.action != "keep"], str(path))
    if new == old:
        return ""
    with atomic_path(path) as tmp:
        tmp.write_text(new)
        load_config(tmp)
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), str(path), str(path)))
