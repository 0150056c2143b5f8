"""Evaluation of cell geometries (HGCal-like hexagonal readouts) with the HGCal challenge's features.

:func:`evaluate_cells` is what :func:`calogen.eval.evaluate.evaluate` runs for a geometry of
``kind == "cells"``: it streams each file once into a :class:`CellSample` (the challenge's features of
:mod:`calogen.cell_features`, the energy per ring and the cell spectrum), and writes ``metrics.json``
and ``report.html`` with the same record layout as the cylindrical evaluation. It follows
``hgcal_metrics.py`` and ``plotting/plotting_utils.py`` of the challenge (:data:`CHALLENGE_CODE`):

* **Histograms and separation powers** of every feature the challenge plots: incident energy, energy
  ratio ``E_tot / E_inc``, per layer the x and y centre and width and the occupancy, the energy fraction
  per layer ``E_l / (E_tot + 1e-8)`` and per ring ``E_ring / (E_tot + 1e-8)``; besides them the energy
  per layer in MeV (the challenge's ``--use_absolute`` profile) and the cell spectrum. Binning as the
  challenge's ``make_hist``: 49 equal bins from the reference minimum ``- 1e-8`` to its maximum
  ``+ 1e-8``; occupancies in integer steps ``max(ceil(range / 50), 1)``. The cell spectrum has
  calogen's voxel-spectrum binning (49 log bins from the threshold to the reference maximum; at
  threshold 0 from the smallest reference cell energy, at most 6 decades below the maximum; the
  challenge has no spectrum).
* **Classifier** (``cls-high``) on the challenge's DNN input: :func:`calogen.cell_features.challenge_vector`
  (``E_inc``, ratio, x centres, x widths, y centres, y widths, occupancies) followed by the energy
  fractions per layer and per ring, standardised over both samples as the challenge's
  ``StandardScaler``; network and training are calogen's classifier settings. ``cls-low`` runs on the
  cells, ``[log10 E_inc, cells / E_inc]``.
* **FPD and KPD** on the same vector, each column divided by the reference's largest absolute value
  (JetNet's normalisation), with the challenge's batch sizes: FPD from 20k to 200k rows, KPD 10 batches
  of 5k; PRDC on the scaled vector as for cylinders.
* **Report**: the histogram pages and per-layer hexagon maps of the average shower, reference beside
  every sample, for the layers around the reference's shower maximum (:mod:`calogen.eval.hexmaps`).

The CNN classifier and the feature families need a cylindrical grid and are skipped; weighted
samples are not supported yet. ``conventions`` in ``metrics.json`` lists every difference from the
challenge in effect.

Example:
    >>> edges = challenge_bins(np.array([3.0, 7.0, 5.0]), discrete=True)  # occupancies: unit steps
    >>> len(edges), float(edges[1] - edges[0])
    (6, 1.0)
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calogen.cell_features import CellFeatures, challenge_vector, compute_cell_features
from calogen.cell_geometry import CellGeometry
from calogen.errors import CalogenError
from calogen.eval.evaluate import low_level_from_file
from calogen.eval.histograms import (
    HistogramComparison,
    compare_values,
    voxel_spectrum_comparison,
)
from calogen.eval.record import SampleEvaluation, write_evaluation
from calogen.eval.settings import EvaluationSettings
from calogen.io import ShowerFile
from calogen.voxel_spectrum import VoxelSpectrum

__all__ = [
    "CHALLENGE_CODE", "CellSample", "cell_classifier_vector", "cell_conventions", "cell_sample_from_file", "challenge_bins",
    "compare_cell_samples", "evaluate_cells",
]  # fmt: skip

log = logging.getLogger(__name__)

CHALLENGE_CODE = {
    "repository": "github.com/OzAmram/CMSHGCaloChallenge",
    "files": ["hgcal_metrics.py", "plotting/plotting_utils.py", "utils.py"],
    "commit": "28d61fc",
}
"""The version of the HGCal challenge's evaluation whose definitions the cell evaluation follows."""

EPS = 1e-8
"""The challenge's ``eps``: bin-edge margin and the energy added to ``E_tot`` in the profile fractions."""
N_EDGES = 50
FPD_BATCHES = {"min_samples": 20_000, "max_samples": 200_000}
KPD_BATCH = 5_000
SPECTRUM_DECADES = 6.0
"""Span of the cell spectrum below the reference's largest cell energy when the threshold is 0."""
CELL_METRICS = ("hist", "cls-low", "cls-high", "fpd", "kpd", "prdc")
"""Metrics the cell evaluation computes; the others in the settings are skipped with a log line."""
_PER_LAYER = (
    ("x_centre", "x centre of energy", "mm"), ("x_width", "x width", "mm"), ("y_centre", "y centre of energy", "mm"),
    ("y_width", "y width", "mm"), ("occupancy", "occupancy (cells above threshold)", ""), ("e_layer", "energy", "MeV"),
)  # fmt: skip


@dataclass(frozen=True)
class CellSample:
    """Everything the cell evaluation needs from one file.

    Args:
        features: the challenge's per-shower features.
        ring_energy: ``(N, R)`` energy per hexagonal ring (all layers), MeV.
        voxel_spectrum: energies of all cells above the threshold.
    """

    features: CellFeatures
    ring_energy: np.ndarray
    voxel_spectrum: VoxelSpectrum

    @property
    def n_showers(self) -> int:
        """Number of showers N."""
        return self.features.n_showers

    @property
    def mean_shower(self) -> np.ndarray:
        """``(voxels,)`` average shower, MeV."""
        return self.features.mean_shower

    @property
    def layer_fraction(self) -> np.ndarray:
        """``(N, L)`` energy fraction per layer ``E_l / (E_tot + 1e-8)`` (the challenge's longitudinal profile)."""
        return self.features.e_layer / (self.features.e_total[:, None] + EPS)

    @property
    def ring_fraction(self) -> np.ndarray:
        """``(N, R)`` energy fraction per ring ``E_ring / (E_tot + 1e-8)`` (the challenge's transverse profile)."""
        return self.ring_energy / (self.features.e_total[:, None] + EPS)


def _ring_matrix(geometry: CellGeometry) -> np.ndarray:
    """``(voxels, R)`` float64 one-hot of every cell's ring."""
    rings = geometry.cell_ring
    return (rings[:, None] == np.arange(int(rings.max()) + 1)[None, :]).astype(np.float64)


def _merge_features(parts: list[CellFeatures]) -> CellFeatures:
    arrays = ("e_inc", "e_total", "e_layer", "x_centre", "y_centre", "x_width", "y_width", "occupancy")
    joined = {name: np.concatenate([getattr(p, name) for p in parts]) for name in arrays}
    mean = np.sum([p.mean_shower * p.n_showers for p in parts], axis=0) / max(len(joined["e_inc"]), 1)
    return CellFeatures(**joined, mean_shower=mean, threshold=parts[0].threshold, geometry=parts[0].geometry)


def cell_sample_from_file(
    path: str | os.PathLike[str], geometry: CellGeometry, *, threshold: float | None = None, chunk_size: int = 5_000
) -> CellSample:
    """Stream a calogen shower file of ``geometry`` once into a :class:`CellSample` (the cell count is checked)."""
    threshold = geometry.threshold if threshold is None else threshold
    rings = _ring_matrix(geometry)
    features, ring_energy, spectrum = [], [], VoxelSpectrum.from_values(np.empty(0, np.float32))
    with ShowerFile(path, geometry) as f:  # type: ignore[arg-type]
        for chunk in f.iter_chunks(chunk_size):
            features.append(compute_cell_features(chunk.energies, chunk.showers, geometry, threshold=threshold))
            kept = np.where(chunk.showers >= threshold, chunk.showers, 0.0)
            ring_energy.append(kept.astype(np.float64) @ rings)
            spectrum = spectrum.merge(VoxelSpectrum.from_values(kept[kept > 0]))
    if not features:
        raise CalogenError(f"{path} holds no showers")
    return CellSample(_merge_features(features), np.concatenate(ring_energy), spectrum)


def challenge_bins(reference: np.ndarray, *, discrete: bool = False) -> np.ndarray:
    """Bin edges of the challenge's ``make_hist`` from the reference values.

    49 equal bins on ``[min - 1e-8, max + 1e-8]``; ``discrete`` (occupancies): steps of
    ``max(ceil(range / 50), 1)`` from ``min - 1e-8``. A reference whose values are all equal (the
    challenge's edges then collapse in floating point) gets a window of ``±max(1e-3 |v|, 1e-8)``.
    """
    lo, hi = float(np.min(reference)) - EPS, float(np.max(reference)) + EPS
    if not np.all(np.diff(np.linspace(lo, hi, N_EDGES)) > 0):  # one value, too large for the 1e-8 margin
        half = max(1e-3 * abs(hi), EPS)
        lo, hi = lo - half, hi + half
    if not discrete:
        return np.linspace(lo, hi, N_EDGES)
    delta = max(float(np.ceil((hi - lo) / N_EDGES)), 1.0)
    edges = np.arange(lo, hi + delta, delta)
    return edges if len(edges) >= 2 else np.linspace(lo, lo + delta, 3)


def _histogram(name: str, group: str, layer: int | None, label: str, ref: np.ndarray, gen: np.ndarray) -> HistogramComparison:
    bins = challenge_bins(ref, discrete=group == "occupancy")
    return compare_values(name, group, layer, label, bins, np.asarray(ref, np.float64), np.asarray(gen, np.float64))


def compare_cell_samples(reference: CellSample, generated: CellSample) -> list[HistogramComparison]:
    """Every histogram of the cell evaluation (see the module docstring), reference binning."""
    ref_f, gen_f = reference.features, generated.features
    if ref_f.geometry is not gen_f.geometry and ref_f.geometry.to_dict() != gen_f.geometry.to_dict():
        raise CalogenError("reference and generated samples have different cell geometries; evaluate both with one geometry")
    out = [
        _histogram("e_inc", "e_inc", None, "incident energy [MeV]", ref_f.e_inc, gen_f.e_inc),
        _histogram("e_ratio", "e_ratio", None, "E_tot / E_inc", ref_f.e_ratio, gen_f.e_ratio),
    ]
    for attribute, title, unit in _PER_LAYER:
        ref_v, gen_v = getattr(ref_f, attribute), getattr(gen_f, attribute)
        for i in range(ref_f.geometry.n_layers):
            label = f"{title}, layer {i}" + (f" [{unit}]" if unit else "")
            out.append(_histogram(f"{attribute}_{i}", attribute, i, label, ref_v[:, i], gen_v[:, i]))
    for group, ref_v, gen_v, what in (
        ("e_fraction_layer", reference.layer_fraction, generated.layer_fraction, "layer"),
        ("e_fraction_ring", reference.ring_fraction, generated.ring_fraction, "ring"),
    ):
        for i in range(ref_v.shape[1]):
            out.append(_histogram(f"{group}_{i}", group, i if what == "layer" else None, f"energy fraction, {what} {i}", ref_v[:, i], gen_v[:, i]))
    out.append(voxel_spectrum_comparison(reference, generated, _spectrum_low(reference)))  # type: ignore[arg-type]
    return out


def _spectrum_low(reference: CellSample) -> float:
    """Lower edge of the cell spectrum: the threshold; at threshold 0 the smallest reference cell energy, but
    at most :data:`SPECTRUM_DECADES` decades below the largest (1 keV without any)."""
    if reference.features.threshold > 0:
        return reference.features.threshold
    spectrum = reference.voxel_spectrum
    if not spectrum.n_values:
        return 1e-3
    return max(float(spectrum.cell_values()[0]), float(spectrum.max_value) * 10.0**-SPECTRUM_DECADES)


def cell_classifier_vector(sample: CellSample) -> np.ndarray:
    """The challenge's classifier and FPD input, ``(N, 2 + 6 L + R)``: :func:`challenge_vector`, then the
    energy fractions per layer and per ring."""
    return np.concatenate([challenge_vector(sample.features), sample.layer_fraction, sample.ring_fraction], axis=1)


def _standardised(reference: np.ndarray, generated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both samples shifted and scaled by the mean and standard deviation of their union (``StandardScaler``)."""
    both = np.concatenate([reference, generated])
    mean, std = both.mean(axis=0), both.std(axis=0)
    std[std == 0] = 1.0
    return (reference - mean) / std, (generated - mean) / std


def _classifiers(
    metrics: tuple[str, ...], reference: tuple[Path, CellSample], generated: tuple[Path, CellSample],
    settings: EvaluationSettings, progress: bool,
) -> list[Any]:  # fmt: skip
    from calogen.eval.classifier import run_classifier

    cls_settings, n = settings.classifier_settings(), settings.max_showers_per_side
    geometry, threshold = reference[1].features.geometry, reference[1].features.threshold
    results = []
    if "cls-low" in metrics:
        ref_in, gen_in = (low_level_from_file(p, geometry, n, threshold, settings.chunk_size) for p, _ in (reference, generated))  # type: ignore[arg-type]
        results.append(run_classifier("cls-low", ref_in, gen_in, cls_settings, progress=progress))
    if "cls-high" in metrics:
        ref_in, gen_in = _standardised(cell_classifier_vector(reference[1])[:n], cell_classifier_vector(generated[1])[:n])
        results.append(run_classifier("cls-high", ref_in, gen_in, cls_settings, progress=progress))
    return results


def _distances(metrics: tuple[str, ...], reference: CellSample, generated: CellSample, settings: EvaluationSettings) -> dict[str, Any]:
    from calogen.eval import distances
    from calogen.eval.prdc import prdc

    if not any(m in metrics for m in ("fpd", "kpd", "prdc")):
        return {}
    ref, gen = distances.scale_by_reference(cell_classifier_vector(reference), cell_classifier_vector(generated))
    seed, adapt = settings.seed, settings.adapt_distances
    out: dict[str, Any] = {}
    if "fpd" in metrics:
        out["fpd"] = distances.fpd(ref, gen, seed=seed, scaled=True, adapt_to_sample_size=adapt, **FPD_BATCHES)
    if "kpd" in metrics:
        out["kpd"] = distances.kpd(ref, gen, seed=seed, scaled=True, adapt_to_sample_size=adapt, batch_size=KPD_BATCH)
    if "prdc" in metrics:
        out["prdc"] = prdc(ref, gen, seed=seed, scaled=True)
    return out


def cell_conventions(settings: EvaluationSettings) -> dict[str, Any]:
    """The challenge code followed, and every difference from it in effect for ``settings``."""
    differences = [
        (
            "features in MeV and mm (challenge: GeV incident energy, cm); separation powers, the standardised "
            "classifier input and the max-normalised FPD/KPD input do not depend on units"
        ),
        "occupancy counts cells above the threshold (challenge: above 1e-8 after its EMin cut)",
        "separation-power summary averages every histogram, incident energy included (challenge: without it)",
        "extra histograms: energy per layer in MeV and the cell spectrum",
        "a reference feature with a single value gets bins of +-1e-3 of it (challenge: collapsed edges)",
        "no removal of showers with features above 1e4 (challenge: before classifier and FPD)",
        (
            "classifier: calogen's settings and splits (challenge: 2 x 2024 units, dropout 0.2, Adam 1e-4, batch 256, "
            "50 epochs, split 70/10/20)"
        ),
    ]
    if settings.max_showers_per_side < 100_000:
        differences.append(f"classifiers use at most {settings.max_showers_per_side} showers per side (challenge: all)")
    if settings.adapt_distances:
        differences.append("FPD/KPD batch sizes adapted to the sample size (challenge: FPD 20k-200k, KPD 5k rows)")
    if settings.seed != 42:
        differences.append(f"FPD/KPD resampling seed {settings.seed} (challenge: 42)")
    return {"official_code": CHALLENGE_CODE, "differences": differences}


def evaluate_cells(
    reference: str | os.PathLike[str],
    generated: dict[str, str | os.PathLike[str]],
    geometry: CellGeometry,
    out_dir: str | os.PathLike[str],
    *,
    settings: EvaluationSettings | None = None,
    reference_name: str = "reference",
    timing: dict[str, dict[str, float]] | None = None,
    title: str | None = None,
    extra: dict[str, Any] | None = None,
    progress: bool = False,
    weights: dict[str, str | os.PathLike[str]] | None = None,
) -> dict[str, Any]:
    """:func:`calogen.eval.evaluate.evaluate` for a cell geometry (same arguments, same record layout)."""
    from calogen.eval.hexmaps import hexmap_section

    if weights:
        raise CalogenError("weighted samples (--weights) are not supported for cell geometries yet")
    started = time.perf_counter()
    settings = settings or EvaluationSettings()
    threshold = geometry.threshold if settings.threshold is None else settings.threshold
    paths = {name: Path(p) for name, p in generated.items()}
    for path in [Path(reference), *paths.values()]:
        ShowerFile(path, geometry).close()  # type: ignore[arg-type]  # structural validation before any long work
    skipped = [m for m in settings.metrics if m not in CELL_METRICS]
    if skipped:
        log.warning("%s need a cylindrical geometry; skipped for %s", ", ".join(skipped), geometry.name)
    metrics = tuple(m for m in settings.metrics if m in CELL_METRICS)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CalogenError(f"cannot create output directory {out}: {exc.strerror}") from None
    computed: dict[Path, CellSample] = {}

    def sample_of(path: Path) -> CellSample:
        if path not in computed:
            computed[path] = cell_sample_from_file(path, geometry, threshold=threshold, chunk_size=settings.chunk_size)
        return computed[path]

    ref_path = Path(reference)
    ref = sample_of(ref_path)
    samples = []
    for name, path in paths.items():
        gen = sample_of(path)
        sample = SampleEvaluation(name=name, path=str(path), features=gen)  # type: ignore[arg-type]
        sample.histograms = compare_cell_samples(ref, gen) if "hist" in metrics else []
        sample.classifiers = _classifiers(metrics, (ref_path, ref), (path, gen), settings, progress)
        sample.distances = _distances(metrics, ref, gen, settings)
        sample.timing = dict((timing or {}).get(name, {}))
        samples.append(sample)
    geometry_info = {"name": geometry.name, "n_voxels": geometry.n_voxels, "kind": geometry.kind}
    maps = {reference_name: ref.mean_shower, **{s.name: s.features.mean_shower for s in samples}}
    return write_evaluation(
        out, geometry, geometry_info, threshold, cell_conventions(settings), settings, (reference_name, ref_path, ref), samples,
        started=started, title=title, extra=extra, sections=hexmap_section(geometry, maps),
    )  # fmt: skip
