"""A self-contained HTML report comparing one reference sample with one or more generated samples.

The page embeds its data as JSON and draws every plot in the browser as SVG (no network, no external
scripts): first what gives each sample away (the AUC of a classifier on each feature family alone, see
:mod:`calogen.eval.families`, with the mean hits per layer and the voxel-energy spectrum of reference and
generated showers side by side), then a summary table, every CaloChallenge histogram with reference vs
generated and a ratio panel (sorted so the worst separation powers come first), classifier score
distributions, and the average shower per layer drawn in its true cylindrical (r, alpha) binning, side
by side per sample.

Log-binned histograms (layer energies, voxel spectrum) are drawn as the fraction of entries per decade,
``f_i / log10(b_(i+1) / b_i)``, on a log x axis: the density per MeV that defines their separation power
would turn the narrow lowest bins into tall spikes made of a few entries. Other histograms are drawn as
densities. Separation powers are always those of the densities.
"""

from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calogen.cell_geometry import CellGeometry
from calogen.geometry import Geometry
from calogen.io import atomic_path

__all__ = ["SampleReport", "render_report"]

_TEMPLATE = Path(__file__).with_name("report_template.html")


@dataclass
class SampleReport:
    """Everything the report shows about one generated sample.

    Attributes:
        name: label of the sample (e.g. ``model``, ``GFLASH``).
        histograms: the :class:`~calogen.eval.histograms.HistogramComparison` list against the reference.
        mean_shower: average shower, ``(voxels,)`` MeV.
        classifiers: classifier results (objects with ``kind``, ``auc_mean``, ``auc_std``, ``jsd_mean``,
            ``ref_scores``, ``gen_scores``).
        scalars: further figures for the summary table, name -> (value, error or None).
        timing: ms per shower by batch size, if measured.
        families: the :class:`~calogen.eval.families.FamilyComparison` against the reference, if computed.
    """

    name: str
    histograms: list[Any]
    mean_shower: np.ndarray
    classifiers: list[Any] = field(default_factory=list)
    scalars: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    families: Any = None


def _rounded(values: Any, digits: int = 5) -> list[float | None]:
    """Floats with ``digits`` significant digits for compact JSON; NaN/inf become null."""
    out: list[float | None] = []
    for v in np.asarray(values, dtype=float).ravel():
        out.append(float(f"{v:.{digits}g}") if math.isfinite(v) else None)
    return out


def _score_histogram(scores: np.ndarray, bins: np.ndarray) -> list[float | None]:
    counts, _ = np.histogram(np.asarray(scores, dtype=float), bins=bins, density=True)
    return _rounded(counts)


def _drawn(density: np.ndarray, bins: np.ndarray, log_x: bool) -> list[float | None]:
    """What a histogram panel draws: the density, or for log bins the fraction of entries per decade."""
    density, bins = np.asarray(density, dtype=float), np.asarray(bins, dtype=float)
    if not log_x:
        return _rounded(density)
    return _rounded(density * np.diff(bins) / np.diff(np.log10(bins)))


def _families(comparison: Any) -> dict[str, Any] | None:
    """The family AUCs and the hits and spectrum profiles of one sample, for the page."""
    if comparison is None:
        return None
    return {
        "n_per_side": comparison.n_per_side,
        "n_folds": comparison.settings.n_folds,
        "families": [
            {"family": f.family, "label": f.label, "auc_mean": f.auc_mean, "auc_std": f.auc_std} for f in comparison.families
        ],
        "layers": list(comparison.layers),
        "hits_reference": _rounded(comparison.hits_reference),
        "hits_generated": _rounded(comparison.hits_generated),
        "spectrum_edges": _rounded(comparison.spectrum_edges, 7),
        "spectrum_reference": _rounded(comparison.spectrum_reference),
        "spectrum_generated": _rounded(comparison.spectrum_generated),
    }


def _polar_showers(
    geometry: Geometry | CellGeometry, reference_name: str, reference_mean_shower: np.ndarray, samples: list[SampleReport]
) -> tuple[list[dict[str, Any]], dict[str, list[list[float | None]]]]:
    """The (r, alpha) layers and average showers per layer that the page draws; none for cell geometries
    (their hexagon maps come as a ``sections`` entry of :func:`render_report`)."""
    if geometry.kind != "cylindrical":
        return [], {}
    layers = [
        {"index": i, "r_edges": list(geometry.layers[i].r_edges), "n_alpha": geometry.layers[i].n_alpha}
        for i in geometry.nonempty_layers
    ]
    shower_per_layer = {
        reference_name: [_rounded(reference_mean_shower[geometry.layer_slice(i)], 4) for i in geometry.nonempty_layers]
    }
    for sample in samples:
        shower_per_layer[sample.name] = [_rounded(sample.mean_shower[geometry.layer_slice(i)], 4) for i in geometry.nonempty_layers]
    return layers, shower_per_layer


def _payload(
    title: str,
    geometry: Geometry | CellGeometry,
    reference_name: str,
    reference_mean_shower: np.ndarray,
    samples: list[SampleReport],
    metadata: dict[str, Any],
) -> dict[str, Any]:
    histograms: dict[str, dict[str, Any]] = {}
    for sample in samples:
        for h in sample.histograms:
            entry = histograms.setdefault(
                h.name,
                {
                    "name": h.name,
                    "group": h.group,
                    "layer": h.layer,
                    "label": h.label,
                    "log_x": bool(h.log_x),
                    "y": "fraction per decade" if h.log_x else "density",
                    "bins": _rounded(h.bins, 7),
                    "reference": _drawn(h.reference, h.bins, h.log_x),
                    "samples": {},
                },
            )
            entry["samples"][sample.name] = {
                "values": _drawn(h.generated, h.bins, h.log_x),
                "counts": _rounded(h.generated_counts),
                "separation": float(h.separation),
                "wasserstein": None if h.wasserstein is None else float(h.wasserstein),
            }
    score_bins = np.linspace(0.0, 1.0, 41)
    layers, shower_per_layer = _polar_showers(geometry, reference_name, reference_mean_shower, samples)
    return {
        "title": title,
        "reference": reference_name,
        "geometry": {"name": geometry.name, "n_voxels": geometry.n_voxels, "layers": layers},
        "samples": [
            {
                "name": s.name,
                "scalars": {k: [float(v[0]), None if v[1] is None else float(v[1])] for k, v in s.scalars.items()},
                "timing": s.timing,
                "families": _families(s.families),
                "classifiers": [
                    {
                        "kind": c.kind,
                        "auc_mean": float(c.auc_mean),
                        "auc_std": float(c.auc_std),
                        "jsd_mean": float(c.jsd_mean),
                        "bins": _rounded(score_bins),
                        "reference": _score_histogram(c.ref_scores, score_bins),
                        "generated": _score_histogram(c.gen_scores, score_bins),
                    }
                    for c in s.classifiers
                ],
            }
            for s in samples
        ],
        "histograms": list(histograms.values()),
        "mean_shower": shower_per_layer,
        "metadata": metadata,
    }


def render_report(
    path: str | os.PathLike[str],
    *,
    title: str,
    geometry: Geometry | CellGeometry,
    reference_name: str,
    reference_mean_shower: np.ndarray,
    samples: list[SampleReport],
    metadata: dict[str, Any] | None = None,
    sections: str = "",
) -> None:
    """Write the report to ``path`` atomically.

    Args:
        path: output HTML file.
        title: page title.
        geometry: the readout all samples use.
        reference_name: label of the reference sample.
        reference_mean_shower: average reference shower, ``(voxels,)``.
        samples: one :class:`SampleReport` per generated sample.
        metadata: free-form provenance shown at the bottom of the page (inputs, versions, settings).
        sections: further HTML sections placed before the provenance (e.g. the hexagon maps of a cell
            geometry, :func:`calogen.eval.hexmaps.hexmap_section`); a cell geometry hides the (r, alpha) one.
    """
    data = _payload(title, geometry, reference_name, reference_mean_shower, samples, metadata or {})
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    page = _TEMPLATE.read_text(encoding="utf-8")
    page = page.replace("__TITLE__", html.escape(title)).replace("__DATA__", blob)
    if sections:
        page = page.replace('<section id="meta">', sections + '<section id="meta">', 1)
    if geometry.kind != "cylindrical":
        page = page.replace('<section id="showers-section">', '<section id="showers-section" hidden>', 1)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
