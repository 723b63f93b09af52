"""The audit as a terminal table, then its recommendations."""

from __future__ import annotations

from fvc.slurm.recommend import Recommendation

HEAD = ("job", "rule", "wildcards", "att", "state", "req MB", "peak MB", "mem %", "elapsed", "cpu %", "flag")
NUMERIC = {3, 5, 6, 7, 8, 9}  # right-aligned columns


def _fmt(value: float | int | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def render_table(rows: list[dict], recs: list[Recommendation]) -> str:
    """The audit as a terminal table, then the recommendations."""
    body = [
        (
            r["job_id"] or r["source"],
            r["rule"],
            r["wildcards"] or "-",
            str(r["attempt"]),
            r["state"],
            _fmt(r["req_mem_mb"]),
            _fmt(r["peak_mem_mb"]),
            _fmt(r["mem_eff"], ".1f"),
            _hms(r["elapsed_s"]),
            _fmt(r["cpu_eff"], ".1f"),
            r["flag"],
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(HEAD, *body, strict=True)]

    def line(cells: tuple) -> str:
        return "  ".join(
            c.rjust(w) if i in NUMERIC else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(HEAD), line(tuple("-" * w for w in widths)), *map(line, body)]
    if recs:
        out += ["", "recommended memory (MB):"]
        out += [
            f"  {r.table}.{r.row}.{r.key}: {_fmt(r.current)} -> {r.recommended}  [{r.action}] {r.reason}"
            for r in recs
        ]
    return "\n".join(out)
