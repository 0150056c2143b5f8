"""The outputs of ``calogen bench``: ``bench.json``, ``bench.html`` (one self-contained page, the plane
inline as SVG) and ``bench-plane.svg`` / ``bench-plane.png``, each written atomically after all are rendered."""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from typing import Any

from calogen.eval.bench.generators import BenchError
from calogen.eval.bench.plane import PANELS, plane_figures, plane_points

__all__ = ["OUTPUT_FILES", "render_page", "write_outputs"]

OUTPUT_FILES = ("bench.json", "bench.html", "bench-plane.svg", "bench-plane.png")
_STYLE = (
    "body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1300px;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
    "th:first-child,td:first-child{text-align:left}.note{color:#555;font-size:13px}svg{max-width:100%;height:auto}"
)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: float | None, spread: float | None = None) -> str:
    if value is None:
        return "–"
    text = f"{value:.4g}"
    return text if spread is None else f"{text} ± {spread:.2g}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _timing_rows(record: dict[str, Any]) -> list[list[str]]:
    rows = []
    for g in record["generators"]:
        for device in ("cpu", "gpu"):
            result = g["timing"].get(device)
            if not result:
                continue
            cells = [_e(g["name"]), device.upper(), f"{g['n_parameters']:,}"]
            by_batch = {b["batch_size"]: b for b in result["batches"]}
            for size in record["settings"]["batch_sizes"]:
                b = by_batch.get(size)
                cells.append(
                    "–" if b is None else
                    f"{b['ms_per_shower_median']:.4g} <span class=note>({b['ms_per_shower_p16']:.3g}–{b['ms_per_shower_p84']:.3g}, "
                    + (f"CPU time {b['cpu_ms_per_shower_median']:.3g}, " if b.get("cpu_ms_per_shower_median") is not None else "") +
                    f"{b['n_showers']} showers{', ' + _e(b['note']) if b['note'] else ''})</span>"
                )  # fmt: skip
            cells.append(_e(result["environment"].get("torch_threads")))
            load = g.get("load_average") or {}
            cells.append(_e(" → ".join(f"{v[0]:g}" for v in (load.get("before"), load.get("after_cpu")) if v) or "–") if device == "cpu" else "–")
            rows.append(cells)
    return rows


def render_page(record: dict[str, Any], svg: str) -> str:
    """The self-contained HTML page of a bench record with the plane's SVG inline."""
    points = plane_points(record)
    env = record["environment"]
    sizes = record["settings"]["batch_sizes"]
    parts = [
        f"<!doctype html><html><head><meta charset=utf-8><title>calogen bench — {_e(record['geometry'])}</title>",
        f"<style>{_STYLE}</style></head><body><h1>calogen bench — {_e(record['geometry'])}</h1>",
        f"<p class=note>CPU: {_e(env.get('cpu_model'))}, {_e(env.get('cpu_affinity'))} usable cores, torch threads "
        f"{_e(env.get('torch_threads'))}, numba threads {_e(env.get('numba_threads'))}; GPU: {_e(record['gpu'] or 'none')}. "
        f"Energies: {_e(record['settings']['energies'])}; budget {record['settings']['budget_s']:g} s per generator and batch size.</p>",
        re.sub(r"^<\?xml[^>]*>\s*(<!DOCTYPE[^>]*>)?\s*", "", svg),
    ]
    if record.get("published"):
        pub = record["published"]
        parts.append(
            f"<p class=note>Grey points: the published CaloChallenge 2022 submissions for {_e(pub['dataset'])} ({_e(pub['citation'])}), "
            "measured against the official Geant4 dataset with the official evaluation code on the authors' hardware. "
            "They are comparable with the coloured points only when those were evaluated against the official dataset."
            + (f" Not timed on {points['device'].upper()} at batch {points['batch_size']}: {_e(', '.join(points['published_untimed']))}." if points["published_untimed"] else "")
            + "</p>"
        )
    parts.append("<h2>Time per shower (ms; wall-time median, 16–84 % of timed calls, median process CPU time)</h2>")
    parts.append(_table(["generator", "device", "parameters", *(f"batch {s}" for s in sizes), "threads", "load (1 min)"], _timing_rows(record)))
    notes = {g["name"]: g["gpu_note"] for g in record["generators"] if g["gpu_note"]}
    if len(set(notes.values())) == 1 and len(notes) == len(record["generators"]):
        parts.append(f"<p class=note>GPU: {_e(next(iter(notes.values())))}.</p>")
    elif notes:
        parts.append("<p class=note>GPU: " + "; ".join(f"{_e(n)}: {_e(t)}" for n, t in notes.items()) + ".</p>")
    rows = []
    for name, q in record["quality"].items():
        v = q["values"]
        ref = q["reference"]
        rows.append([_e(name), *(_num(*(v.get(m) or [None])) for m in PANELS), _e(f"{q['source']['path']} #{q['source']['sample']}"),
                     _e(f"{ref.get('name', '?')} ({ref.get('n_showers', '?')} showers)")])  # fmt: skip
    if rows:
        parts.append("<h2>Quality (from calogen evaluate)</h2>")
        parts.append(_table(["generator", *PANELS.values(), "metrics file", "reference"], rows))
        followed = sorted({json.dumps((q.get("conventions") or {}).get("official_code")) for q in record["quality"].values()})
        parts.append(f"<p class=note>Official evaluation code followed: {_e('; '.join(followed))}.</p>")
    if points["published"]:
        prow = [[_e(p["name"]), f"{p['ms']:.4g}", *(_num(*(p[m] or [None])) for m in PANELS)] for p in points["published"]]
        parts.append(f"<h2>Published ({points['device'].upper()}, batch {points['batch_size']})</h2>")
        parts.append(_table(["submission", "ms/shower", *PANELS.values()], prow))
    parts.append(f"<h2>Record</h2><pre>{_e(json.dumps({k: record[k] for k in ('settings', 'environment', 'plane')}, indent=1))}</pre></body></html>")
    return "\n".join(parts)


def write_outputs(record: dict[str, Any], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Render everything, then write :data:`OUTPUT_FILES` into ``out_dir`` (created if missing); returns the paths."""
    from calogen.outputs import atomic_path, check_output_dir

    svg, png = plane_figures(record)
    page = render_page(record, svg)
    text = json.dumps(record, indent=1, allow_nan=False)
    out = check_output_dir(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create output directory {out}: {exc.strerror}") from None
    contents: dict[str, str | bytes] = dict(zip(OUTPUT_FILES, (text, page, svg, png), strict=True))
    paths = []
    for name, content in contents.items():
        with atomic_path(out / name) as tmp:
            if isinstance(content, bytes):
                tmp.write_bytes(content)
            else:
                tmp.write_text(content, encoding="utf-8")
        paths.append(out / name)
    return paths
