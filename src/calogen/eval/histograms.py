"""Every histogram of the CaloChallenge evaluation, with separation powers and Wasserstein distances.

:func:`compare_features` reproduces the histograms of the official ``evaluate.py`` /
``evaluate_plotting_helper.py`` (github.com/CaloChallenge/homepage, ``code/``, commit ad3a816 of
2025-01-02, recorded as :data:`OFFICIAL_CODE`): same quantities, bin edges, density normalisation
(entries outside the edges are dropped before normalising) and separation power. Binning, with ``t``
the lower energy edge (default: the threshold; the official ``min_energy`` is 0.5 keV / 0.033 on
DS2/DS3 and 1 MeV on DS1, both calogen's geometry thresholds) and ``max`` the largest reference value:

============================  ========================================================================
``e_ratio``                   E_tot / E_inc, 100 bins on [0.5, 1.5]
``e_layer``                   per non-empty layer, ``logspace(log10 t, log10 max, 40)`` (39 bins)
``eta_centre/phi_centre``     per alpha-binned layer, 100 bins on [-30, 30] mm (regular geometries);
                              [-100, 100] mm, [-500, 500] mm for layers 12 and 13 (DS1 conventions)
``eta_width/phi_width``       100 bins on [0, 30] mm; DS1 conventions [0, 100] mm, [0, 400] mm (12, 13)
``voxel_spectrum``            ``logspace(log10 t, log10 max, 50)`` (49 bins) over all voxels
``e_ratio_per_einc``          DS1 conventions only: E_tot / E_inc for E_inc in [2^k, 2^(k+1)) MeV,
                              k = 8..22, 20 bins on [0.4, 1.4]; photons from k = 12 on [0.9, 1.1]
``sparsity``                  per non-empty layer, fraction of zero voxels, 20 bins on [0, 1]
``r_centre``                  per non-empty layer, 100 bins on [0, 42] mm; DS1 conventions [0, 500] mm,
                              [0, 1500] mm for layers 12-14
``r_width``                   100 bins on [0, 20] mm; DS1 conventions as ``r_centre``
============================  ========================================================================

``log10 max`` is taken in float32 from the float32 reference maximum, as the official code does. The
sparsity and radial histograms are the helper's ``plot_sparsity``, ``plot_ECR`` and ``plot_ECWidthR``
(added Oct-Nov 2023; the official ``plot_histograms`` does not call them, the official high-level
classifier and FPD/KPD use these features); with them DS2 has 362 histograms.

**Which conventions apply** is decided by the geometry, never by a name: a geometry that is not
regular (layers with different binnings or empty layers, as the ATLAS-based dataset 1) uses the DS1
ranges; a regular one (the Par04 DS2/DS3 layout, ``tiny``, any uniform XML) uses the DS2/DS3 ranges.
The photon binning of the per-energy plots applies when ``geometry.particle == "photon"``.

Deliberate differences from the official scripts (the numbers agree wherever the official one is
defined): a histogram with no entry in range on one side has separation power 1 and on both sides 0
(the official density is 0/0, NaN); per-energy DS1 histograms are made only for energy intervals that
hold reference showers (the official one is NaN for the others); a reference without entries above
``t`` gets log bins over one decade above ``t`` (the official edges are NaN). The voxel spectrum is
binned from the exact voxel values while a sample has at most 134M above-threshold voxels, and from a
fine grid past that (see :class:`calogen.voxel_spectrum.VoxelSpectrum`: then exact except for voxels within
3.1e-5 (relative) of an edge); its Wasserstein distance always uses the grid. The other Wasserstein
distances are exact, by one merge pass over the sorted samples.

**Weighted generated samples** (``weights``, e.g. DCTR weights from :mod:`calogen.eval.reweight`):
every generated histogram is filled with per-shower weights and normalised by its total weight in
range, so separation powers compare the reweighted density with the reference; the generated counts
become weight sums and the Wasserstein distances weighted ones. The voxel spectrum sums over the
voxels of all showers, so its weighted counts need the showers again: ``voxel_counts`` (see
:func:`weighted_voxel_counts`) gives them for any edges; without it a weighted comparison leaves the
voxel spectrum out. The weighted voxel spectrum has no Wasserstein distance (None).

Example:
    >>> import numpy as np
    >>> from calogen.geometry import Geometry
    >>> from calogen.features import compute_features
    >>> g = Geometry.builtin("tiny")
    >>> rng = np.random.default_rng(0)
    >>> f = compute_features(np.full(50, 1e3), rng.exponential(8.0, (50, 120)), g)
    >>> [h.separation for h in compare_features(f, f)][:2]
    [0.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from calogen.errors import CalogenError
from calogen.eval.separation import (
    density_from_counts,
    separation_from_counts,
    sorted_counts,
    wasserstein,
    wasserstein_from_counts,
    wasserstein_sorted,
    weighted_counts,
)
from calogen.features import ShowerFeatures
from calogen.geometry import Geometry

__all__ = [
    "GROUPS", "OFFICIAL_CODE", "HistogramComparison", "HistogramError", "compare_features", "compare_values", "log_bins",
    "uses_ds1_conventions", "voxel_spectrum_comparison", "weighted_voxel_counts",
]  # fmt: skip

GROUPS = (
    "e_ratio", "e_ratio_per_einc", "e_layer", "eta_centre", "phi_centre", "eta_width", "phi_width",
    "r_centre", "r_width", "sparsity", "voxel_spectrum",
)  # fmt: skip
"""Histogram groups, in the order :func:`compare_features` returns them (per-energy ones follow e_ratio)."""

E_RATIO_BINS = np.linspace(0.5, 1.5, 101)
PER_EINC_EXPONENTS = range(8, 23)
"""DS1 incident energies are 2^8 ... 2^22 MeV; interval k holds [2^k, 2^(k+1))."""
SPARSITY_BINS = np.linspace(0, 1, 21)

OFFICIAL_CODE = {
    "repository": "github.com/CaloChallenge/homepage",
    "folder": "code",
    "commit": "ad3a816deb5578c8aaed2718d37a5156f85c3423",
    "date": "2025-01-02",
}
"""The version of the official evaluation whose conventions calogen follows (its last change to ``code/``)."""


class HistogramError(CalogenError):
    """Two feature sets cannot be compared (different geometry or threshold, bad lower edge)."""


@dataclass(frozen=True)
class HistogramComparison:
    """One reference-vs-generated histogram.

    Args:
        name: unique key, e.g. ``e_layer_12`` or ``e_ratio_einc_65536MeV``.
        group: one of :data:`GROUPS`.
        layer: layer index, or None for whole-shower histograms.
        label: x-axis label with units.
        bins: ``(B + 1,)`` bin edges.
        log_x: whether the edges are logarithmic.
        reference: ``(B,)`` reference density (integrates to 1 over ``bins``).
        generated: ``(B,)`` generated density.
        reference_counts: ``(B,)`` raw reference counts.
        generated_counts: ``(B,)`` raw generated counts (weight sums for a weighted sample).
        separation: separation power of the two densities.
        wasserstein: 1-D Wasserstein distance of the unbinned values (None when a side is empty).
    """

    name: str
    group: str
    layer: int | None
    label: str
    bins: np.ndarray
    log_x: bool
    reference: np.ndarray
    generated: np.ndarray
    reference_counts: np.ndarray
    generated_counts: np.ndarray
    separation: float
    wasserstein: float | None


def uses_ds1_conventions(geometry: Geometry) -> bool:
    """True when the DS1 (ATLAS-like) plot ranges apply: the geometry is not regular."""
    return not geometry.is_regular


def _by_layer(reference: ShowerFeatures, generated: ShowerFeatures, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``(N, L)`` feature ``name`` of both samples as ``(L, N)`` arrays: contiguous per-layer rows."""
    return np.ascontiguousarray(getattr(reference, name).T), np.ascontiguousarray(getattr(generated, name).T)


def _sorted_finite(values: np.ndarray) -> np.ndarray:
    """``values`` sorted without their NaNs (np.sort puts NaN last, where a binary search finds them)."""
    ordered = np.sort(values)
    return ordered[: np.searchsorted(ordered, np.nan)]


def compare_values(
    name: str, group: str, layer: int | None, label: str, bins: np.ndarray, ref: np.ndarray, gen: np.ndarray,
    *, log_x: bool = False, weights: np.ndarray | None = None,
) -> HistogramComparison:
    """One histogram of reference values ``ref`` against generated values ``gen`` (NaNs dropped) on ``bins``."""
    ref_sorted = _sorted_finite(ref)
    ref_counts = sorted_counts(ref_sorted, bins)
    if weights is None:
        gen_sorted = _sorted_finite(gen)
        gen_counts = sorted_counts(gen_sorted, bins)
        distance = wasserstein_sorted(ref_sorted, gen_sorted) if ref_sorted.size and gen_sorted.size else None
    else:
        gen_counts = weighted_counts(gen, weights, bins)
        finite = ~np.isnan(gen)
        distance = wasserstein(ref_sorted, gen, weights) if ref_sorted.size and weights[finite].sum() > 0 else None
    ref_density, gen_density = density_from_counts(ref_counts, bins), density_from_counts(gen_counts, bins)
    return HistogramComparison(
        name, group, layer, label, np.asarray(bins, np.float64), log_x, ref_density, gen_density,
        ref_counts, gen_counts, separation_from_counts(ref_counts, gen_counts, bins), distance,
    )  # fmt: skip


def log_bins(min_energy: float, ref_max: float, n_edges: int) -> np.ndarray:
    """Official ``logspace(log10(min_energy), log10(reference max), n_edges)``, the upper logarithm in
    float32 from the float32 maximum; a decade when max <= min."""
    if not ref_max > min_energy:
        return np.logspace(np.log10(min_energy), np.log10(min_energy) + 1.0, n_edges)
    return np.logspace(np.log10(min_energy), np.log10(np.float32(ref_max)), n_edges)


def _radial_ranges(geometry: Geometry, layer: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(centre range, width range)`` in mm of the radial histograms of a layer."""
    if not uses_ds1_conventions(geometry):
        return (0.0, 42.0), (0.0, 20.0)
    wide = (0.0, 1500.0) if layer in (12, 13, 14) else (0.0, 500.0)
    return wide, wide


def _coordinate_ranges(geometry: Geometry, layer: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(centre range, width range)`` in mm of an alpha-binned layer."""
    if not uses_ds1_conventions(geometry):
        return (-30.0, 30.0), (0.0, 30.0)
    if layer in (12, 13):
        return (-500.0, 500.0), (0.0, 400.0)
    return (-100.0, 100.0), (0.0, 100.0)


def _per_einc(
    reference: ShowerFeatures, generated: ShowerFeatures, weights: np.ndarray | None
) -> Iterator[HistogramComparison]:
    photons = reference.geometry.particle == "photon"
    ref_ratio, gen_ratio = reference.e_ratio, generated.e_ratio
    for i, k in enumerate(PER_EINC_EXPONENTS):
        low, high = 2.0**k, 2.0 ** (k + 1)
        ref_sel = (reference.e_inc >= low) & (reference.e_inc < high)
        if not ref_sel.any():
            continue
        gen_sel = (generated.e_inc >= low) & (generated.e_inc < high)
        bins = np.linspace(0.9, 1.1, 21) if photons and i > 3 else np.linspace(0.4, 1.4, 21)
        yield compare_values(
            f"e_ratio_einc_{int(low)}MeV", "e_ratio_per_einc", None,
            f"E_tot / E_inc at E_inc = {low:g} MeV", bins, ref_ratio[ref_sel], gen_ratio[gen_sel],
            weights=None if weights is None else weights[gen_sel],
        )  # fmt: skip


def voxel_spectrum_comparison(
    reference: ShowerFeatures,
    generated: ShowerFeatures,
    min_energy: float,
    voxel_counts: Callable[[np.ndarray], np.ndarray] | None = None,
) -> HistogramComparison:
    """The voxel-spectrum histogram of the ``voxel_spectrum`` of two samples, log bins from ``min_energy`` MeV."""
    ref_spec, gen_spec = reference.voxel_spectrum, generated.voxel_spectrum
    bins = log_bins(min_energy, ref_spec.max_value, 50)
    ref_counts = ref_spec.histogram(bins)
    gen_counts = gen_spec.histogram(bins) if voxel_counts is None else np.asarray(voxel_counts(bins), np.float64)
    ref_density, gen_density = density_from_counts(ref_counts, bins), density_from_counts(gen_counts, bins)
    distance = None
    if ref_spec.n_values and gen_spec.n_values and voxel_counts is None:
        distance = wasserstein_from_counts(*ref_spec.aligned(gen_spec))
    return HistogramComparison(
        "voxel_spectrum", "voxel_spectrum", None, "voxel energy E [MeV]", bins, True, ref_density, gen_density,
        ref_counts, gen_counts, separation_from_counts(ref_counts, gen_counts, bins), distance,
    )  # fmt: skip


def _check_comparable(reference: ShowerFeatures, generated: ShowerFeatures) -> None:
    ref_g, gen_g = reference.geometry, generated.geometry
    if ref_g.layers != gen_g.layers:
        raise HistogramError(
            f"reference geometry {ref_g.name!r} and generated geometry {gen_g.name!r} differ; "
            "compute both feature sets with the same geometry"
        )
    if reference.threshold != generated.threshold:
        raise HistogramError(
            f"reference threshold {reference.threshold:g} MeV differs from generated threshold "
            f"{generated.threshold:g} MeV; compute both feature sets with the same threshold"
        )


def weighted_voxel_counts(
    chunks: Iterable[tuple[np.ndarray, np.ndarray]], edges: np.ndarray, threshold: float
) -> np.ndarray:
    """Voxel-spectrum histogram of weighted showers: every voxel at or above ``threshold`` (and above 0)
    counts with its shower's weight, in bins of ``edges`` (``np.histogram`` rules), ``(B,)`` float64.

    Args:
        chunks: ``(showers (n, voxels) MeV, weights (n,))`` pairs, e.g. streamed from a file.
        edges: ``(B + 1,)`` increasing bin edges in MeV.
        threshold: per-voxel threshold in MeV, as for the features.
    """
    counts = np.zeros(len(edges) - 1, np.float64)
    for showers, weights in chunks:
        showers = np.asarray(showers, np.float32)
        kept = (showers >= np.float32(threshold)) & (showers > 0)
        per_voxel = np.repeat(np.asarray(weights, np.float64), kept.sum(axis=1))
        counts += np.histogram(showers[kept], bins=edges, weights=per_voxel)[0]
    return counts


def compare_features(
    reference: ShowerFeatures,
    generated: ShowerFeatures,
    *,
    min_energy: float | None = None,
    weights: np.ndarray | None = None,
    voxel_counts: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[HistogramComparison]:
    """All CaloChallenge histograms (with the sparsity and radial ones) of ``generated`` against ``reference``.

    Args:
        reference: features of the reference (e.g. Geant4) sample; it sets the log-bin upper edges.
        generated: features of the sample under test, same geometry and threshold.
        min_energy: lower edge in MeV of the log-binned histograms (default: the threshold).
        weights: ``(N_gen,)`` non-negative weights of the generated showers (None: unweighted; see the
            module docstring).
        voxel_counts: with ``weights``, a function from voxel-spectrum edges to the generated weighted
            counts (e.g. :func:`weighted_voxel_counts` over the file); without it the voxel spectrum is
            left out of a weighted comparison.

    Returns:
        One :class:`HistogramComparison` per histogram, grouped in the order of :data:`GROUPS`.
    """
    _check_comparable(reference, generated)
    weights = _check_weights(weights, generated.n_showers)
    geometry = reference.geometry
    low = reference.threshold if min_energy is None else float(min_energy)
    if not (np.isfinite(low) and low > 0):
        raise HistogramError(
            f"log-binned histograms need a positive lower edge, got {low:g} MeV; pass min_energy > 0 "
            "(features computed with threshold 0 need an explicit min_energy)"
        )
    out = [compare_values("e_ratio", "e_ratio", None, "E_tot / E_inc", E_RATIO_BINS, reference.e_ratio, generated.e_ratio, weights=weights)]
    if uses_ds1_conventions(geometry):
        out.extend(_per_einc(reference, generated, weights))
    ref_t, gen_t = _by_layer(reference, generated, "e_layer")
    for i in geometry.nonempty_layers:
        ref, gen = ref_t[i], gen_t[i]
        bins = log_bins(low, ref.max(), 40)
        out.append(compare_values(f"e_layer_{i}", "e_layer", i, f"energy in layer {i} [MeV]", bins, ref, gen, log_x=True, weights=weights))
    for group, title in (
        ("eta_centre", "centre of energy in eta"), ("phi_centre", "centre of energy in phi"),
        ("eta_width", "width in eta"), ("phi_width", "width in phi"),
    ):  # fmt: skip
        ref_t, gen_t = _by_layer(reference, generated, group)
        for i in geometry.alpha_binned_layers:
            centre_range, width_range = _coordinate_ranges(geometry, i)
            bins = np.linspace(*(centre_range if group.endswith("centre") else width_range), 101)
            ref, gen = ref_t[i], gen_t[i]
            out.append(compare_values(f"{group}_{i}", group, i, f"{title}, layer {i} [mm]", bins, ref, gen, weights=weights))
    for group, title in (("r_centre", "radial centre of energy"), ("r_width", "radial width")):
        ref_t, gen_t = _by_layer(reference, generated, group)
        for i in geometry.nonempty_layers:
            centre_range, width_range = _radial_ranges(geometry, i)
            bins = np.linspace(*(centre_range if group == "r_centre" else width_range), 101)
            ref, gen = ref_t[i], gen_t[i]
            out.append(compare_values(f"{group}_{i}", group, i, f"{title}, layer {i} [mm]", bins, ref, gen, weights=weights))
    ref_t, gen_t = _by_layer(reference, generated, "sparsity")
    for i in geometry.nonempty_layers:
        label = f"sparsity (fraction of zero voxels), layer {i}"
        out.append(compare_values(f"sparsity_{i}", "sparsity", i, label, SPARSITY_BINS, ref_t[i], gen_t[i], weights=weights))
    if weights is None or voxel_counts is not None:
        out.append(voxel_spectrum_comparison(reference, generated, low, voxel_counts))
    return out


def _check_weights(weights: np.ndarray | None, n: int) -> np.ndarray | None:
    """``(n,)`` float64 finite non-negative weights with a positive sum (None passes through)."""
    if weights is None:
        return None
    w = np.asarray(weights, np.float64)
    if w.shape != (n,):
        raise HistogramError(f"weights have shape {w.shape}; expected ({n},), one per generated shower")
    if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
        raise HistogramError("weights must be finite, non-negative and not all zero")
    return w
