"""The quality-vs-time plane: AUC (low-level, high-level) and FPD against ms per shower, log time axis.

One panel per metric. The benchmarked generators are coloured points at their median ms/shower (bars:
16-84 % of the timed calls) and quality (bars: spread over classifier runs, FPD error); a generator
without quality figures (typically the reference simulator itself) is a vertical line at its time. The
published CaloChallenge submissions of the same dataset are grey points at their published time on the
same device and batch size, and the Geant4-vs-Geant4 baseline a horizontal dashed line; they are
measured against the official Geant4 dataset and comparable only when the benchmarked generators were
evaluated against that same dataset. FPD uses a log axis; AUC, bounded to [0.5, 1], a linear one.

The time is the wall time (``plane.clock`` ``wall``) or, for the benchmarked generators, the process CPU
time (``cpu``: closer to the uncontended wall time of a one-thread run on a busy machine; the published
times are wall times). Inputs are the JSON-ready bench record, so a saved ``bench.json`` can be drawn again; equal records
give byte-identical SVG and PNG files.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from calogen.eval.bench.generators import BenchError
from calogen.eval.bench.published import PublishedEntry

__all__ = ["PANELS", "plane_figures", "plane_points"]

PANELS: dict[str, str] = {"auc_low": "AUC, low-level classifier", "auc_high": "AUC, high-level classifier", "fpd": "FPD"}
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _timing(row: dict[str, Any], device: str, batch_size: int) -> dict[str, Any] | None:
    result = row["timing"].get(device)
    if not result:
        return None
    return next((b for b in result["batches"] if b["batch_size"] == batch_size), None)


def plane_points(record: dict[str, Any]) -> dict[str, Any]:
    """The plotted numbers of a bench record: per panel, the benchmarked and the published points.

    Returns ``{"device", "batch_size", "ours": [...], "published": [...], "published_untimed": [...],
    "reference": {...} | None}``; every point holds name, ms and the metric values with spreads.
    """
    device, batch = record["plane"]["device"], int(record["plane"]["batch_size"])
    clock = record["plane"].get("clock", "wall")
    ours = []
    for row in record["generators"]:
        t = _timing(row, device, batch)
        if t is None or (clock == "cpu" and t.get("cpu_ms_per_shower_median") is None):
            continue
        quality = record["quality"].get(row["name"], {}).get("values", {})
        ms = t["ms_per_shower_median"] if clock == "wall" else t["cpu_ms_per_shower_median"]
        ours.append(
            {
                "name": row["name"],
                "ms": ms,
                "ms_range": [t["ms_per_shower_p16"], t["ms_per_shower_p84"]] if clock == "wall" else [ms, ms],
                "capped": t["capped"],
                **{m: quality.get(m) for m in PANELS},
            }
        )
    published, untimed, reference = [], [], None
    if record.get("published"):
        for data in record["published"]["entries"]:
            entry = PublishedEntry.from_dict(data)
            values = {m: None if entry.quality(m) is None else list(entry.quality(m)) for m in PANELS}  # type: ignore[arg-type]
            if entry.is_reference:
                reference = {"name": entry.name, **values}
                continue
            time = entry.time_ms.get((device, batch))
            if time is None:
                untimed.append(entry.name)
                continue
            published.append({"name": entry.name, "ms": time[0], "ms_std": time[1], **values})
    return {"device": device, "batch_size": batch, "clock": clock, "ours": ours, "published": published, "published_untimed": untimed, "reference": reference}


def plane_figures(record: dict[str, Any]) -> tuple[str, bytes]:
    """The plane as SVG text and PNG bytes (deterministic for equal records)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
        raise BenchError(f"drawing the bench plane needs matplotlib ({exc}); pip install matplotlib") from None
    points = plane_points(record)
    if not points["ours"] and not points["published"]:
        raise BenchError(f"nothing to draw: no generator was timed on {points['device']} at batch {points['batch_size']}")
    with matplotlib.rc_context({"svg.hashsalt": "calogen-bench", "svg.fonttype": "none", "font.size": 8}):
        fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 4.4), layout="constrained")
        legend: dict[str, Any] = {}
        for ax, (metric, label) in zip(axes, PANELS.items(), strict=True):
            _panel(ax, metric, label, points)
            handles, labels = ax.get_legend_handles_labels()
            legend.update({lab: h for h, lab in zip(handles, labels, strict=True) if lab not in legend})
        fig.legend(list(legend.values()), list(legend.keys()), loc="outside lower center", ncol=min(len(legend), 6), fontsize=7, frameon=False)
        published = record.get("published")
        source = f"grey: CaloChallenge 2022 {published['dataset']} submissions vs official Geant4 ({published['citation'].split(', ')[-1]})" if published else ""
        fig.suptitle(
            f"quality vs time, {points['device'].upper()} batch {points['batch_size']}"
            + (f"\n{source}; comparable only with a model evaluated against the official dataset" if source else ""),
            fontsize=8,
        )
        svg, png = io.BytesIO(), io.BytesIO()
        fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
        fig.savefig(png, format="png", dpi=150, metadata={"Software": None})
        plt.close(fig)
    return svg.getvalue().decode("utf-8"), png.getvalue()


def _panel(ax: Any, metric: str, label: str, points: dict[str, Any]) -> None:
    ax.set_xscale("log")
    if metric == "fpd":
        ax.set_yscale("log")
    clock = "" if points["clock"] == "wall" else "; coloured: process CPU time"
    ax.set_xlabel(f"ms per shower ({points['device'].upper()}, batch {points['batch_size']}{clock})")
    ax.set_ylabel(label)
    ax.grid(True, which="major", alpha=0.25)
    for p in points["published"]:
        value = p[metric]
        if value is None:
            continue
        ax.errorbar(p["ms"], value[0], xerr=p["ms_std"] or None, yerr=value[1], fmt="o", ms=3.5, color="0.55", elinewidth=0.6)
        ax.annotate(p["name"], (p["ms"], value[0]), xytext=(3, 2), textcoords="offset points", fontsize=5.5, color="0.4")
    ref = points["reference"]
    if ref and ref[metric] is not None:
        ax.axhline(ref[metric][0], color="0.4", ls="--", lw=0.8, label=f"{ref['name']} vs {ref['name']} (published)")
    for i, p in enumerate(points["ours"]):
        colour = _COLOURS[i % len(_COLOURS)]
        lo, hi = p["ms_range"]
        value = p[metric]
        if value is None:
            ax.axvline(p["ms"], color=colour, ls=":", lw=1.2, label=f"{p['name']} (time only)")
            continue
        xerr = np.array([[max(p["ms"] - lo, 0.0)], [max(hi - p["ms"], 0.0)]])
        ax.errorbar(p["ms"], value[0], xerr=xerr, yerr=value[1], fmt="s", ms=5, color=colour, label=p["name"] + (" (capped)" if p["capped"] else ""))
    if metric != "fpd":
        low, high = ax.get_ylim()
        ax.set_ylim(max(0.45, min(low, 0.5)), min(1.02, max(high, 0.6)))
