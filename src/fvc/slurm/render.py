"""The audit as a terminal table, then its recommendations; the same as an HTML page for the report."""

from __future__ import annotations

import html

from fvc.slurm.recommend import Recommendation

HEAD = (
    "job", "rule", "wildcards", "att", "state", "req MB", "pred MB", "peak MB", "measure", "MaxRSS", "mem %",
    "elapsed", "limit", "time %", "CPUs", "cpu %", "GPUs", "GPU MB", "GPU %", "flag",
)  # fmt: skip
NUMERIC = {3, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18}  # right-aligned columns
#: The unit of each recommended key, for the recommendation lines.
UNITS = {"runtime": "min", "cpus": "CPUs", "decode_threads": "CPUs", "gpus": "GPUs"}


def _fmt(value: float | int | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _cells(r: dict) -> tuple[str, ...]:
    """One audit row as the table's text cells."""
    return (
        r["job_id"] or r["source"],
        r["rule"],
        r["wildcards"] or "-",
        str(r["attempt"]),
        r["state"],
        _fmt(r["req_mem_mb"]),
        _fmt(r.get("predicted_mb")),
        _fmt(r["peak_mem_mb"]),
        r.get("peak_source") or "-",
        _fmt(r.get("max_rss_mb")),
        _fmt(r["mem_eff"], ".1f"),
        _hms(r["elapsed_s"]),
        _hms(r.get("time_limit_s")),
        _fmt(r.get("time_eff"), ".1f"),
        _fmt(r.get("cpus")),
        _fmt(r["cpu_eff"], ".1f"),
        str(r["gpus"] or 0),
        _fmt(r["gpu_peak_mb"]),
        _fmt(r["gpu_util"]),
        r["flag"] or "",
    )


def render_table(rows: list[dict], recs: list[Recommendation]) -> str:
    """The audit as a terminal table, then the recommendations."""
    body = [_cells(r) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(HEAD, *body, strict=True)]

    def line(cells: tuple) -> str:
        return "  ".join(
            c.rjust(w) if i in NUMERIC else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(HEAD), line(tuple("-" * w for w in widths)), *map(line, body)]
    if recs:
        out += ["", "recommended memory (MB), runtime (min), CPUs and GPUs:"]
        out += [f"  {r.path}: {_fmt(r.current)} -> {r.recommended}  [{r.action}] {r.reason}" for r in recs]
    return "\n".join(out)


def html_page(title: str, body: str) -> str:
    """A small standalone HTML page in fvc's table style, for a `snakemake --report` item."""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}th{background:#f3f3f3}"
        ".num{text-align:right}tr.ensemble{font-weight:bold}tr.flagged td{background:#fde0dd}"
        "</style></head><body>" + body + "</body></html>\n"
    )


def render_html(rows: list[dict], recs: list[Recommendation]) -> str:
    """The audit table (flagged jobs highlighted) and the recommendations as an HTML page for the report."""
    kind = ["num" if i in NUMERIC else "text" for i in range(len(HEAD))]
    head = "".join(f"<th class='{k}'>{html.escape(name)}</th>" for k, name in zip(kind, HEAD, strict=True))
    body = "".join(
        f"<tr class='{'flagged' if cells[-1] != '' else 'ok'}'>"
        + "".join(f"<td class='{k}'>{html.escape(c)}</td>" for k, c in zip(kind, cells, strict=True))
        + "</tr>"
        for cells in map(_cells, rows)
    )
    items = "".join(
        f"<li><code>{html.escape(r.path)}</code>: {_fmt(r.current)} &rarr; "
        f"{r.recommended} {UNITS.get(r.key, 'MB')} [{html.escape(r.action)}] {html.escape(r.reason)}</li>"
        for r in recs
    )
    recommended = (
        f"<h3>Recommended memory, runtime and CPUs (fvc audit --apply)</h3><ul>{items}</ul>" if recs else ""
    )
    return html_page("fvc resource audit", f"<table><tr>{head}</tr>{body}</table>{recommended}")
