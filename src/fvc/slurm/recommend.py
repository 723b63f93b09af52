"""Right-sized mem_mb, runtime and cpus per rule and model, and vram_mb / gpus per GPU model, from the audit
rows: a YAML snippet, or edits to the config that also rewrite the edited lines' `# audit <date>: ...`
comments (where each value came from)."""

from __future__ import annotations

import datetime
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
from fvc.slurm.memory_keys import (
    MODEL_KEYS,
    RULE_CPUS,
    configured_mem_mb,
    resource_row,
    snakemake_overhead_mb,
)

ROUND_MB = 100
#: runtime (minutes) = longest successful elapsed x this, rounded up, never below RUNTIME_FLOOR_MIN (a job
#: also waits for its node, starts Snakemake and writes its outputs; elapsed varies with the node's load).
RUNTIME_MARGIN = 2.0
RUNTIME_FLOOR_MIN = 5
#: Rules whose runtime sits in the model's row (the others: `resources.<rule>.runtime`; infer has none).
RUNTIME_KEYS = {"train": "runtime"}
#: The previous audit note of a config line's comment (replaced by the new one).
AUDIT_NOTE_RE = re.compile(r"\s*;?\s*audit \d{4}-\d\d-\d\d:[^#]*$")


@dataclass(frozen=True)
class Recommendation:
    """Right-sized value of one config number (`models.<model>.<key>` or `resources.<rule>.mem_mb`)."""

    table: str
    row: str
    key: str
    current: int | None
    recommended: int
    action: str  # lower | raise | keep | raise-oom | raise-timeout
    reason: str
    basis: str = ""  # what the value rests on, for the config line's comment (e.g. `peak 512 MB (cgroup)`)

    @property
    def path(self) -> str:
        """The config key's dotted path (`models.x3d.mem_mb`; `augment.decode_threads` has no row)."""
        return ".".join(part for part in (self.table, self.row, self.key) if part)

    def value_in(self, config: dict) -> object:
        """This key's value in a config (None when absent)."""
        table = config.get(self.table) or {}
        holder = (table.get(self.row) or {}) if self.row else table
        return holder.get(self.key)


def _round_up(value: float) -> int:
    return int(math.ceil(value / ROUND_MB) * ROUND_MB)


def recommend(rows: Iterable[dict], config: dict, safety_factor: float = 1.2) -> list[Recommendation]:
    """Per rule (and per model for train/infer): peak over successful jobs x safety factor, rounded up to
    100 MB and never below the per-job Snakemake overhead; rules that only ran out of memory get last
    request x memory_growth."""
    groups: dict[tuple[str, str | None], list[dict]] = {}
    for row in rows:
        groups.setdefault((resource_row(row["rule"]), row["model"]), []).append(row)
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
        ok = [r for r in members if r["state"] == "COMPLETED" and r["peak_mem_mb"] is not None]
        ooms = [r for r in members if r["state"] == "OUT_OF_MEMORY" and r["req_mem_mb"]]
        if ok:
            top = max(ok, key=lambda r: r["peak_mem_mb"])
            peak, measure = top["peak_mem_mb"], top.get("peak_source") or "MaxRSS"
            value = max(_round_up(peak * safety_factor), floor)
            action = "keep" if value == current else "lower" if current and value < current else "raise"
            reason = (
                f"{rule}: peak {peak:.0f} MB ({measure}) over {len(ok)} successful job(s) x {safety_factor}"
            )
            basis = f"peak {peak:.0f} MB ({measure})"
            worst = max((r["req_mem_mb"] for r in ooms), default=0)
            if worst >= value:  # another job of this group ran out of memory at least this high
                value, action = _round_up(worst * growth), "raise"
                reason += f", but out of memory at {worst:.0f} MB: x{growth}"
                basis = f"out of memory at {worst:.0f} MB"
        elif ooms:
            last = max(ooms, key=lambda r: id_order(r["job_id"]))
            value, action = _round_up(last["req_mem_mb"] * growth), "raise-oom"
            reason = (
                f"{rule}: no successful job; out of memory at {last['req_mem_mb']:.0f} MB "
                f"(job {last['job_id']}): raise to x{growth}"
            )
            basis = f"out of memory at {last['req_mem_mb']:.0f} MB"
        else:
            continue
        recs.append(Recommendation(table, row_name, key, current, value, action, reason, basis))
    return (
        recs
        + recommend_runtime(rows, config)
        + recommend_cpus(rows, config, safety_factor)
        + recommend_gpu(rows, config, safety_factor)
    )


def _minutes(seconds: float) -> str:
    return (
        f"{int(seconds) // 60}:{int(round(seconds)) % 60:02d}"
        if seconds < 3600
        else f"{seconds / 3600:.1f} h"
    )


def recommend_runtime(rows: Iterable[dict], config: dict) -> list[Recommendation]:
    """`runtime` (minutes) per rule and model where the config has one (models.<model>.runtime for train,
    resources.<rule>.runtime): longest successful elapsed x RUNTIME_MARGIN, rounded up, at least
    RUNTIME_FLOOR_MIN (or the current value, when lower: the floor alone raises nothing); a group that
    timed out at a limit this high or higher: that limit x memory_growth."""
    groups: dict[tuple[str, str | None], list[dict]] = {}
    for row in rows:
        groups.setdefault((resource_row(row["rule"]), row["model"]), []).append(row)
    growth = config.get("memory_growth", 1.5)
    recs = []
    for (rule, model), members in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        if rule in RUNTIME_KEYS and model is not None:
            table, row_name, current = "models", model, config["models"].get(model, {}).get("runtime")
        elif rule not in MODEL_KEYS and isinstance(config.get("resources", {}).get(rule), dict):
            table, row_name, current = "resources", rule, config["resources"][rule].get("runtime")
        else:
            continue
        done = [
            r["elapsed_s"] for r in members if r["state"] == "COMPLETED" and r.get("elapsed_s") is not None
        ]
        limits = [r["time_limit_s"] for r in members if r["state"] == "TIMEOUT" and r.get("time_limit_s")]
        if not done and not limits:
            continue
        if done:
            longest = max(done)
            value = max(
                math.ceil(longest * RUNTIME_MARGIN / 60), min(RUNTIME_FLOOR_MIN, current or RUNTIME_FLOOR_MIN)
            )
            reason = (
                f"{rule}: longest of {len(done)} successful job(s) {_minutes(longest)} x {RUNTIME_MARGIN}"
            )
            basis = f"max elapsed {_minutes(longest)}"
            action = "keep" if value == current else "lower" if current and value < current else "raise"
        if limits and (not done or max(limits) / 60 >= value):
            # Never below the current value: a limit that timed out may since have been raised by hand.
            value = max(math.ceil(max(limits) / 60 * growth), current or 0)
            action = "keep" if value == current else "raise-timeout" if not done else "raise"
            reason = f"{rule}: timed out at {max(limits) / 60:.0f} min: x{growth}"
            basis = f"timed out at {max(limits) / 60:.0f} min"
        recs.append(Recommendation(table, row_name, "runtime", current, value, action, reason, basis))
    return recs


def _cpus(members: list[dict], current: int | None, floor: int, safety_factor: float) -> tuple:
    """(value, action, reason, basis) of a CPU count from the successful jobs that asked for it."""
    busy = max(r["cpu_eff"] / 100 * r["cpus"] for r in members)
    asked = max(r["cpus"] for r in members)
    value = min(max(math.ceil(busy * safety_factor), floor, 1), asked)
    action = "keep" if value == current else "lower" if current and value < current else "raise"
    reason = f"{len(members)} successful job(s): at most {busy:.2f} of {asked} CPU(s) busy x {safety_factor}"
    return value, action, reason, f"{busy:.2f} CPUs busy"


def recommend_cpus(rows: Iterable[dict], config: dict, safety_factor: float = 1.2) -> list[Recommendation]:
    """`cpus` per model (its train and infer jobs) and the CPU key of the rules in RULE_CPUS: the most CPUs
    any successful job kept busy (TotalCPU / Elapsed) x safety factor, rounded up; never more than asked (a
    job cannot show it needed more than it had) and, for a model, never fewer than num_workers + 1."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row["state"] != "COMPLETED" or not row.get("cpus") or row.get("cpu_eff") is None:
            continue
        if row["rule"] in MODEL_KEYS and row["model"] is not None:
            groups.setdefault(("models", row["model"]), []).append(row)
        elif resource_row(row["rule"]) in RULE_CPUS:
            groups.setdefault(("rule", resource_row(row["rule"])), []).append(row)
    recs = []
    for (kind, name), members in sorted(groups.items()):
        if kind == "models":
            spec = config.get("models", {}).get(name, {})
            current = spec.get("cpus")
            value, action, reason, basis = _cpus(
                members, current, spec.get("num_workers", 0) + 1, safety_factor
            )
            recs.append(Recommendation("models", name, "cpus", current, value, action, reason, basis))
        else:
            table, key = RULE_CPUS[name]
            current = config.get(table, {}).get(key)
            value, action, reason, basis = _cpus(members, current, 1, safety_factor)
            recs.append(Recommendation(table, "", key, current, value, action, f"{name}: {reason}", basis))
    return recs


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
    lines = [
        "# fvc audit: right-sized memory (MB), runtime (minutes) and CPUs; `fvc audit --apply` writes these "
        "into config.yaml"
    ]
    for table in sorted(tables, key=lambda t: (t not in ("models", "resources"), t != "models", t)):
        lines.append(f"{table}:")
        for row, values in tables[table].items():
            why = "; ".join(reasons[(table, row)])
            if not row:  # keys of the table itself (augment.decode_threads)
                lines += [f"  {k}: {v}  # {why}" for k, v in values.items()]
                continue
            inner = ", ".join(f"{k}: {v}" for k, v in values.items())
            lines.append(f"  {row}: {{{inner}}}  # {why}")
    return "\n".join(lines) + "\n"


def _block_end(lines: list[str], start: int, indent: int, stop: int) -> int:
    """Index of the first line after `start` (up to `stop`) that is indented no deeper than `indent`."""
    for i in range(start + 1, stop):
        stripped = lines[i].lstrip()
        if stripped and not stripped.startswith("#") and len(lines[i]) - len(stripped) <= indent:
            return i
    return stop


def _note_line(lines: list[str], start: int, stop: int, key: str) -> int:
    """Index of the line between `start` and `stop` that holds `key:`."""
    pattern = re.compile(rf"(?<![\w-]){re.escape(key)}\s*:")
    return next(i for i in range(start, stop) if pattern.search(lines[i].split("#", 1)[0]))


def _with_note(line: str, note: str) -> str:
    """`line` whose comment ends with `note`; a previous audit note is replaced, other comment text kept."""
    body, newline = line.rstrip("\n"), "\n" if line.endswith("\n") else ""
    code, _, comment = body.partition("#")
    comment = AUDIT_NOTE_RE.sub("", comment).strip()
    return f"{code.rstrip()}  # {comment + '; ' if comment else ''}{note}{newline}"


def edit_config_text(
    text: str, recs: Iterable[Recommendation], source: str = "config.yaml", today: datetime.date | None = None
) -> str:
    """config.yaml's text with the recommended numbers written in place; layout and other comments kept. The
    comment of each edited line ends with `audit <today>: <basis of each value on it>` (a previous audit
    note replaced), so that it keeps saying where the line's numbers come from."""
    recs = list(recs)
    stamp = f"audit {(today or datetime.date.today()).isoformat()}"
    lines = text.splitlines(keepends=True)
    notes: dict[int, list[str]] = {}
    for rec in recs:
        top = next((i for i, line in enumerate(lines) if re.match(rf"{rec.table}:\s*(#.*)?$", line)), None)
        if top is None:
            raise ValueError(f"{source}: no top-level `{rec.table}:` table")
        end = _block_end(lines, top, 0, len(lines))
        if not rec.row:  # a key of the table itself
            row, row_end = top, end
        else:
            found = next(
                (i for i in range(top + 1, end) if re.match(rf"\s+{re.escape(rec.row)}\s*:", lines[i])), None
            )
            if found is None:
                raise ValueError(f"{source}: `{rec.table}` has no row `{rec.row}`")
            row = found
            row_indent = len(lines[row]) - len(lines[row].lstrip())
            row_end = _block_end(lines, row, row_indent, end)
        block = "".join(lines[row:row_end])
        new_block, count = re.subn(
            rf"(?<![\w-])({re.escape(rec.key)}\s*:\s*)(\d+|null)", rf"\g<1>{rec.recommended}", block
        )
        if count == 0 and "{" in block:  # a key the flow-style row leaves at its default (e.g. vram_mb)
            new_block, count = block.replace("{", f"{{{rec.key}: {rec.recommended}, ", 1), 1
        if count != 1:
            raise ValueError(f"{source}: `{rec.path}` has {count} `{rec.key}:` numbers, expected 1")
        new_lines = new_block.splitlines(keepends=True)
        if len(new_lines) != row_end - row:
            raise ValueError(f"{source}: editing {rec.path} changed the line count")
        lines[row:row_end] = new_lines
        if rec.basis:
            at = _note_line(lines, row, row_end, rec.key)
            notes.setdefault(at, []).append(f"{rec.key} {rec.basis}")
    for at, items in notes.items():
        lines[at] = _with_note(lines[at], f"{stamp}: {', '.join(items)}")
    new_text = "".join(lines)
    new = yaml.safe_load(new_text)
    for rec in recs:
        if rec.value_in(new) != rec.recommended:
            raise ValueError(f"{source}: editing {rec.path} failed")
    return new_text


def apply_recommendations(
    config_path: str | Path, recs: list[Recommendation], today: datetime.date | None = None
) -> str:
    """Write the recommendations that differ from the file's numbers into it (validated first, atomically),
    with the edited lines' audit notes; return the diff."""
    path = Path(config_path)
    old = path.read_text()
    current = yaml.safe_load(old) or {}
    todo = [r for r in recs if r.value_in(current) != r.recommended]
    new = edit_config_text(old, todo, str(path), today)
    if new == old:
        return ""
    with atomic_path(path) as tmp:
        tmp.write_text(new)
        load_config(tmp)
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), str(path), str(path)))
