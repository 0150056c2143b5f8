"""The plain-text summary table of a metrics record, as ``calogen evaluate`` prints it."""

from __future__ import annotations

from typing import Any

__all__ = ["format_table", "summary_rows"]


def summary_rows(record: dict[str, Any]) -> list[tuple[str, ...]]:
    """The summary table as rows of strings (header first), from a metrics record."""
    header = ("metric", *(s["name"] for s in record["samples"]))
    rows: list[tuple[str, ...]] = [header]

    def row(label: str, cells: list[str]) -> None:
        rows.append((label, *cells))

    samples = record["samples"]
    if any(s["separation_power_summary"] for s in samples):
        row("separation power, mean", [_f(s["separation_power_summary"].get("mean")) for s in samples])
        row("separation power, max", [f"{_f(s['separation_power_summary'].get('max'))} ({s['separation_power_summary'].get('max_histogram', '')})" for s in samples])
        groups = sorted({g for s in samples for g in s["separation_power_summary"].get("mean_by_group", {})})
        for g in groups:
            row(f"  S {g}", [_f(s["separation_power_summary"]["mean_by_group"].get(g)) for s in samples])
    kinds = sorted({c["kind"] for s in samples for c in s["classifiers"]})
    for kind in kinds:
        cells = []
        for s in samples:
            c = next((c for c in s["classifiers"] if c["kind"] == kind), None)
            cells.append(f"{c['auc_mean']:.4f} ± {c['auc_std']:.4f}" if c else "–")
        row(f"AUC {kind}", cells)
    families = [{f["family"]: f for f in (s.get("families") or {}).get("families", [])} for s in samples]
    for key in dict.fromkeys(k for fams in families for k in fams):
        row(f"AUC family {key}", [f"{f[key]['auc_mean']:.3f} ± {f[key]['auc_std']:.3f}" if key in f else "–" for f in families])
    for key in ("fpd", "kpd"):
        if any(key in s["distances"] for s in samples):
            row(key.upper(), [f"{_f(s['distances'][key]['value'])} ± {_f(s['distances'][key]['error'])}" if key in s["distances"] else "–" for s in samples])
    if any("prdc" in s["distances"] for s in samples):
        for key in ("precision", "recall", "density", "coverage"):
            row(key, [_f(s["distances"]["prdc"].get(key)) if "prdc" in s["distances"] else "–" for s in samples])
    if any(s.get("weights") for s in samples):
        row("effective sample size (weights)", [_f(s["weights"]["ess"]) if s.get("weights") else "–" for s in samples])
    timing_keys = sorted({k for s in samples for k in s["timing_ms_per_shower"]})
    for key in timing_keys:
        row(key, [_f(s["timing_ms_per_shower"].get(key)) for s in samples])
    return rows


def _f(value: Any) -> str:
    if value is None:
        return "–"
    value = float(value)
    return f"{value:.3e}" if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5) else f"{value:.4g}"


def format_table(rows: list[tuple[str, ...]]) -> str:
    """Render rows as an aligned plain-text table."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
