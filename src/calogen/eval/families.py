"""What gives a generated sample away: a classifier trained on one feature family at a time.

The classifier tests of :mod:`calogen.eval.classifier` say *whether* generated showers can be told
from reference ones; this module says *by what*. For each family of per-shower features below, a
gradient-boosted tree classifier (scikit-learn ``HistGradientBoostingClassifier``) is trained to
separate reference (label 0) from generated (label 1) showers on ``log10(E_inc / MeV)`` and that
family's columns only; its ROC AUC is measured by k-fold cross-validation (every shower is
tested once, by a model that did not see it; a reference and a generated shower of equal ``E_inc``
always share a fold, so samples generated from the reference's energies are judged fairly) and
reported as the mean and sample standard deviation over the folds. AUC 0.5: the family does not tell the samples apart; 1: it alone separates them.

==================  ================================================================================
``e_inc``           control: no column besides ``log10 E_inc``; far from 0.5 means the incident
                    energies of the two files differ, and every other family inherits that
``e_ratio``         ``E_tot / E_inc``
``layer_energies``  ``E_l / E_inc`` per non-empty layer
``centres``         eta and phi centres of energy per alpha-binned layer (mm)
``widths``          eta and phi widths per alpha-binned layer (mm)
``radial``          radial centre and width per non-empty layer (mm)
``hits``            number of voxels above the threshold per non-empty layer
``voxel_spectrum``  number of above-threshold voxels per shower in fixed energy bins
                    ``[t, 0.1, 0.3, 1, 3, 10, 30, ..., 10^4, inf)`` MeV (edges at or below the threshold
                    ``t`` are dropped), the per-shower form of the voxel-energy spectrum
==================  ================================================================================

Why trees and not the DNN of :mod:`calogen.eval.classifier`: on these narrow, tabular inputs a boosted
tree needs no input scaling and is the sharper, cheaper judge. Measured on DS2, 1500 held-out
detailed-MC showers vs 1500 of the shipped model (2 NFE), same columns, the DNN at its default
settings (3 runs): layer energies 0.705 vs 0.526, centres 0.647 vs 0.515, widths 0.825 vs 0.761,
radial 0.716 vs 0.558, hits 0.995 vs 0.923, voxel spectrum 1.000 vs 1.000 (tree vs DNN), at a third
to a half of the CPU time. The classifier uses the first ``min(N_ref, N_gen, max_showers_per_side)``
showers of each file.

:func:`compare_families` also returns the two side-by-side profiles the report draws: the mean
number of hits per layer and the voxel-energy spectrum as voxels per shower per decade of energy,
reference and generated, over all showers of each sample.

Example:
    >>> import numpy as np
    >>> from calogen.features import compute_features
    >>> from calogen.geometry import Geometry
    >>> g, rng = Geometry.builtin("tiny"), np.random.default_rng(0)
    >>> e = np.full(300, 1e4)
    >>> a, b = rng.exponential(50.0, (300, 120)), rng.exponential(50.0, (300, 120))
    >>> fa, fb = compute_features(e, a, g), compute_features(e, b, g)
    >>> cols = family_columns(fa, shower_spectra(a, g.threshold))
    >>> sorted(cols)[:3]
    ['centres', 'e_inc', 'e_ratio']
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calogen.errors import CalogenError
from calogen.features import ShowerFeatures
from calogen.generator import derive_seed

__all__ = [
    "FAMILIES",
    "FamilyComparison",
    "FamilyError",
    "FamilyResult",
    "FamilySettings",
    "compare_families",
    "family_auc",
    "family_columns",
    "hits_per_layer",
    "shower_spectra",
    "spectrum_edges",
]

log = logging.getLogger(__name__)

FAMILIES: dict[str, str] = {
    "e_inc": "E_inc (control)",
    "e_ratio": "E_tot / E_inc",
    "layer_energies": "layer energies",
    "centres": "centres (eta, phi)",
    "widths": "widths (eta, phi)",
    "radial": "radial centre, width",
    "hits": "hits per layer",
    "voxel_spectrum": "voxel spectrum",
}
"""Family key -> label, in the order they are reported."""

SPECTRUM_EDGES_MEV = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4)
"""Inner edges of the per-shower voxel-energy bins (MeV); the threshold is the first edge, inf the last."""

PROFILE_BINS_PER_DECADE = 10
"""Log bins per decade of the voxel-spectrum profile drawn in the report."""

MIN_SHOWERS_PER_SIDE = 20
"""Fewest showers per side: every fold then tests both classes."""


class FamilyError(CalogenError):
    """Family-classifier inputs or settings are invalid."""


@dataclass(frozen=True)
class FamilySettings:
    """Classifier and cross-validation settings of the per-family test.

    Args:
        n_folds: folds of the cross-validation; the spread is over these.
        max_showers_per_side: the first this many showers of each file are used (None: all).
        seed: seed of the fold assignment and of the trees (each fold ``k`` uses ``derive_seed(seed, k)``).
        max_iter: most boosting iterations (early stopping on 10% of the training fold may stop sooner).
        learning_rate: boosting learning rate.
        max_leaf_nodes: leaves per tree.
    """

    n_folds: int = 3
    max_showers_per_side: int | None = 10_000
    seed: int = 0
    max_iter: int = 100
    learning_rate: float = 0.2
    max_leaf_nodes: int = 15

    def __post_init__(self) -> None:
        problems = []
        if self.n_folds < 2:
            problems.append(f"n_folds={self.n_folds} must be >= 2")
        if self.max_showers_per_side is not None and self.max_showers_per_side < MIN_SHOWERS_PER_SIDE:
            problems.append(f"max_showers_per_side={self.max_showers_per_side} must be >= {MIN_SHOWERS_PER_SIDE} or None")
        if self.max_iter < 1 or self.max_leaf_nodes < 2:
            problems.append(f"max_iter={self.max_iter} must be >= 1 and max_leaf_nodes={self.max_leaf_nodes} >= 2")
        if not self.learning_rate > 0:
            problems.append(f"learning_rate={self.learning_rate} must be positive")
        if problems:
            raise FamilyError("invalid family-classifier settings: " + "; ".join(problems))


@dataclass(frozen=True)
class FamilyResult:
    """Cross-validated AUC of the classifier on one family: mean and sample std over ``aucs`` (one per fold)."""

    family: str
    label: str
    n_features: int
    auc_mean: float
    auc_std: float
    aucs: list[float]


@dataclass(frozen=True)
class FamilyComparison:
    """Per-family AUCs of one generated sample against the reference, and the profiles the report draws.

    Args:
        families: one :class:`FamilyResult` per key of :data:`FAMILIES`, in that order.
        n_per_side: showers per side in the classifier.
        settings: the settings used.
        layers: the non-empty layer indices of ``hits_*``.
        hits_reference, hits_generated: ``(layers,)`` mean hits per layer over all showers.
        spectrum_edges: ``(B + 1,)`` log-spaced voxel-energy edges, MeV.
        spectrum_reference, spectrum_generated: ``(B,)`` voxels per shower per decade of energy.
    """

    families: list[FamilyResult]
    n_per_side: int
    settings: FamilySettings
    layers: list[int]
    hits_reference: np.ndarray
    hits_generated: np.ndarray
    spectrum_edges: np.ndarray
    spectrum_reference: np.ndarray
    spectrum_generated: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (arrays as lists)."""
        return {
            "classifier": "sklearn HistGradientBoostingClassifier, k-fold cross-validated ROC AUC, E_inc twins in one fold",
            "settings": dataclasses.asdict(self.settings),
            "n_per_side": self.n_per_side,
            "families": [dataclasses.asdict(f) for f in self.families],
            "mean_hits_per_shower": {
                "reference": float(self.hits_reference.sum()), "generated": float(self.hits_generated.sum())
            },
            "mean_hits_per_layer": {
                "layers": self.layers, "reference": self.hits_reference.tolist(), "generated": self.hits_generated.tolist()
            },
            "voxel_spectrum_per_decade": {
                "edges_mev": self.spectrum_edges.tolist(),
                "reference": self.spectrum_reference.tolist(),
                "generated": self.spectrum_generated.tolist(),
            },
        }  # fmt: skip


def spectrum_edges(threshold: float) -> np.ndarray:
    """Per-shower voxel-energy bin edges: ``threshold``, the :data:`SPECTRUM_EDGES_MEV` above it, inf."""
    inner = [e for e in SPECTRUM_EDGES_MEV if e > threshold]
    return np.array([max(threshold, 0.0), *inner, np.inf])


def shower_spectra(showers: np.ndarray, threshold: float) -> np.ndarray:
    """``(N, B)`` number of voxels of each shower in each bin of :func:`spectrum_edges` (``v >= t, v > 0``)."""
    edges = spectrum_edges(threshold)
    showers = np.asarray(showers, dtype=np.float32)
    rows, cols = np.nonzero((showers >= np.float32(threshold)) & (showers > 0))
    index = np.searchsorted(edges[1:-1], showers[rows, cols].astype(np.float64), side="right")
    n_bins = edges.size - 1
    flat = np.bincount(rows * n_bins + index, minlength=showers.shape[0] * n_bins)
    return flat.reshape(showers.shape[0], n_bins)


def _spectra_from_file(path: Path, features: ShowerFeatures, n: int, chunk_size: int) -> np.ndarray:
    from calogen.io import ShowerFile

    parts = []
    with ShowerFile(path, features.geometry) as f:
        for start in range(0, n, chunk_size):
            parts.append(shower_spectra(f.read(start, min(start + chunk_size, n)).showers, features.threshold))
    return np.concatenate(parts)


def hits_per_layer(features: ShowerFeatures) -> np.ndarray:
    """``(N, non-empty layers)`` number of above-threshold voxels, from the per-layer sparsity."""
    geometry = features.geometry
    layers = np.asarray(geometry.nonempty_layers)
    sizes = np.diff(geometry.layer_offsets)[layers]
    return np.rint((1.0 - features.sparsity[:, layers]) * sizes)


def family_columns(features: ShowerFeatures, spectra: np.ndarray, rows: int | None = None) -> dict[str, np.ndarray]:
    """Every family's classifier input for the first ``rows`` showers: ``log10 E_inc`` then its columns.

    Args:
        features: high-level features of the sample.
        spectra: ``(>= rows, B)`` per-shower voxel counts from :func:`shower_spectra`.
        rows: showers to use (default: all of ``spectra``).
    """
    n = len(spectra) if rows is None else rows
    g = features.geometry
    layers, binned = list(g.nonempty_layers), list(g.alpha_binned_layers)
    e_inc = features.e_inc[:n].astype(np.float64)
    blocks = {
        "e_inc": np.zeros((n, 0)),
        "e_ratio": features.e_ratio[:n, None],
        "layer_energies": features.e_layer[:n, layers] / e_inc[:, None],
        "centres": np.hstack([features.eta_centre[:n, binned], features.phi_centre[:n, binned]]),
        "widths": np.hstack([features.eta_width[:n, binned], features.phi_width[:n, binned]]),
        "radial": np.hstack([features.r_centre[:n, layers], features.r_width[:n, layers]]),
        "hits": hits_per_layer(features)[:n],
        "voxel_spectrum": spectra[:n],
    }
    log_e = np.log10(e_inc)[:, None]
    return {name: np.hstack([log_e, np.asarray(blocks[name], np.float64)]) for name in FAMILIES}


def _folds(e_inc: np.ndarray, n: int, n_folds: int, seed: int) -> np.ndarray:
    """Fold of each of ``2n`` rows (reference first); a reference and a generated shower of equal ``E_inc`` share one.

    Generated files are often made from the reference's incident energies. Were such twins split
    between training and test, a classifier that memorises ``E_inc`` would predict the twin's opposite
    label and push the AUC below 0.5, so the ``k``-th reference shower of an energy and the ``k``-th
    generated shower of that energy form one group, and folds are drawn per group.
    """
    _, value = np.unique(e_inc, return_inverse=True)
    occurrence = np.empty(2 * n, np.int64)
    for side in (slice(0, n), slice(n, 2 * n)):
        v = value[side]
        order = np.argsort(v, kind="stable")
        starts = np.searchsorted(v[order], v[order])  # first position of each value in sorted order
        occurrence[side][order] = np.arange(n) - starts
    _, group = np.unique(value * (2 * n) + occurrence, return_inverse=True)
    rng = np.random.default_rng(seed)
    return (rng.permutation(group.max() + 1) % n_folds)[group]


def family_auc(reference: np.ndarray, generated: np.ndarray, settings: FamilySettings = FamilySettings()) -> list[float]:
    """Cross-validated ROC AUCs (one per fold) of a boosted-tree classifier, reference 0 vs generated 1.

    Args:
        reference: ``(N, d)`` reference inputs.
        generated: ``(N', d)`` generated inputs; the first ``min(N, N', max_showers_per_side)`` rows of each are used.
        settings: classifier and fold settings.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    n = min(len(reference), len(generated), settings.max_showers_per_side or len(reference))
    if n < MIN_SHOWERS_PER_SIDE:
        raise FamilyError(f"the family classifier needs at least {MIN_SHOWERS_PER_SIDE} showers per side, got {n}")
    x = np.concatenate([reference[:n], generated[:n]]).astype(np.float64)
    x[~np.isfinite(x)] = 0.0  # NaN moments of empty layers carry no information; trees treat 0 as a value
    y = np.repeat([0, 1], n)
    fold = _folds(x[:, 0], n, settings.n_folds, derive_seed(settings.seed, 0))
    aucs = []
    for k in range(1, settings.n_folds + 1):
        train, test = np.flatnonzero(fold != k - 1), np.flatnonzero(fold == k - 1)
        model = HistGradientBoostingClassifier(
            learning_rate=settings.learning_rate, max_iter=settings.max_iter, max_leaf_nodes=settings.max_leaf_nodes,
            early_stopping=True, validation_fraction=0.1, n_iter_no_change=10,
            random_state=derive_seed(settings.seed, k) % 2**32,
        )  # fmt: skip
        model.fit(x[train], y[train])
        aucs.append(float(roc_auc_score(y[test], model.predict_proba(x[test])[:, 1])))
    return aucs


def _profiles(reference: ShowerFeatures, generated: ShowerFeatures) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-spectrum edges and both spectra as voxels per shower per decade of energy."""
    t = max(reference.threshold, 1e-6)
    top = max(float(reference.voxel_spectrum.max_value), float(generated.voxel_spectrum.max_value), 10 * t)
    n_bins = int(np.ceil(np.log10(top / t) * PROFILE_BINS_PER_DECADE))
    edges = t * 10.0 ** (np.arange(n_bins + 1) / PROFILE_BINS_PER_DECADE)
    edges[-1] = max(edges[-1], top)
    decades = np.diff(np.log10(edges))
    spectra = [f.voxel_spectrum.histogram(edges) / f.n_showers / decades for f in (reference, generated)]
    return edges, spectra[0], spectra[1]


def compare_families(
    reference: tuple[str | os.PathLike[str], ShowerFeatures],
    generated: tuple[str | os.PathLike[str], ShowerFeatures],
    settings: FamilySettings = FamilySettings(),
    *,
    chunk_size: int = 1000,
) -> FamilyComparison:
    """Per-family AUCs of ``generated`` against ``reference`` and their hit and spectrum profiles.

    Args:
        reference: the reference file and its features (same geometry and threshold as ``generated``).
        generated: the generated file and its features.
        settings: classifier settings.
        chunk_size: showers read at once for the per-shower voxel spectra.
    """
    started = time.perf_counter()
    (ref_path, ref), (gen_path, gen) = reference, generated
    if ref.geometry.layers != gen.geometry.layers or ref.threshold != gen.threshold:
        raise FamilyError("reference and generated features differ in geometry or threshold; compute both alike")
    n = min(ref.n_showers, gen.n_showers, settings.max_showers_per_side or ref.n_showers)
    columns = []
    for path, features in ((ref_path, ref), (gen_path, gen)):
        spectra = _spectra_from_file(Path(path), features, n, max(1, chunk_size))
        columns.append(family_columns(features, spectra, n))
    results = []
    for name, label in FAMILIES.items():
        aucs = family_auc(columns[0][name], columns[1][name], settings)
        std = float(np.std(aucs, ddof=1))
        results.append(FamilyResult(name, label, columns[0][name].shape[1] - 1, float(np.mean(aucs)), std, aucs))
    edges, spec_ref, spec_gen = _profiles(ref, gen)
    log.info("family classifiers on %s: %d + %d showers, %.1f s", gen_path, n, n, time.perf_counter() - started)
    return FamilyComparison(
        families=results, n_per_side=n, settings=settings, layers=list(ref.geometry.nonempty_layers),
        hits_reference=hits_per_layer(ref).mean(axis=0), hits_generated=hits_per_layer(gen).mean(axis=0),
        spectrum_edges=edges, spectrum_reference=spec_ref, spectrum_generated=spec_gen,
    )  # fmt: skip
