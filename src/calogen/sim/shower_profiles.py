"""Summaries of shower sets that GFLASH's calibration fits and checks: energy groups, radial profiles, hit counts.

:func:`profile_agreement` compares the mean longitudinal and radial profiles, hit counts and totals of two shower
sets; :func:`energy_groups` splits showers by incident energy (one group per distinct energy, or log-energy quantile
groups when energies are continuous). On a cell readout the radial profile is the energy per hexagonal ring
(:func:`~calogen.sim.gflash_cells.ring_energies`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calogen.cell_geometry import CellGeometry
from calogen.errors import CalogenError
from calogen.geometry import Geometry
from calogen.sim.gflash_cells import ring_energies

__all__ = [
    "CalibrationError",
    "ProfileAgreement",
    "energy_groups",
    "hit_counts",
    "mean_fractions",
    "profile_agreement",
    "radial_edges",
    "radial_energies",
]

_MAX_DISCRETE = 8
_QUANTILE_GROUPS = 4


class CalibrationError(CalogenError):
    """The reference or geometry cannot be used to calibrate GFLASH."""


def radial_edges(geometry: Geometry) -> np.ndarray:
    """The radial edges shared by all non-empty layers (mm)."""
    edges = {geometry.layers[i].r_edges for i in geometry.nonempty_layers}
    if len(edges) != 1:
        raise CalibrationError(
            f"geometry {geometry.name!r} has layers with different radial bins; calibrate on one whose layers "
            "share them (ds2, ds3)"
        )
    return np.asarray(edges.pop(), dtype=np.float64)


def radial_energies(showers: np.ndarray, geometry: Geometry | CellGeometry) -> np.ndarray:
    """Energy per radial bin summed over layers and alpha (per hexagonal ring on cells), ``(N, n_r)``."""
    if geometry.kind == "cells":
        return ring_energies(showers, geometry)
    edges = radial_edges(geometry)
    r_bin = np.searchsorted(edges, geometry.voxel_r) - 1
    out = np.zeros((showers.shape[0], edges.size - 1))
    for b in range(edges.size - 1):
        out[:, b] = showers[:, r_bin == b].sum(axis=1, dtype=np.float64)
    return out


def energy_groups(energies: np.ndarray) -> list[np.ndarray]:
    """Indices of showers per energy group: one per distinct energy, or log-energy quantile groups."""
    energies = np.asarray(energies).reshape(-1)
    distinct = np.unique(energies)
    if distinct.size <= _MAX_DISCRETE:
        return [np.flatnonzero(energies == e) for e in distinct]
    cuts = np.quantile(np.log(energies), np.linspace(0, 1, _QUANTILE_GROUPS + 1)[1:-1])
    label = np.searchsorted(cuts, np.log(energies))
    return [np.flatnonzero(label == k) for k in range(_QUANTILE_GROUPS) if np.any(label == k)]


def hit_counts(showers: np.ndarray, geometry: Geometry | CellGeometry) -> np.ndarray:
    """Number of voxels at or above the geometry threshold per shower, ``(N,)``."""
    return ((showers >= geometry.threshold) & (showers > 0)).sum(axis=1)


def mean_fractions(energy_matrix: np.ndarray) -> np.ndarray:
    """Mean over showers of ``(N, K)`` energies, normalised to sum 1."""
    mean = energy_matrix.mean(axis=0)
    return mean / mean.sum()


@dataclass(frozen=True)
class ProfileAgreement:
    """How well generated showers match reference showers (one energy point).

    Attributes:
        longitudinal: largest relative deviation of the mean energy per layer, over layers holding > 1%.
        radial: largest relative deviation of the mean energy per radial bin, over bins holding > 1%.
        hits: relative deviation of the mean number of hit voxels.
        response: relative deviation of the mean total energy.
    """

    longitudinal: float
    radial: float
    hits: float
    response: float

    def within(self, profile: float = 0.05, hits: float = 0.10) -> bool:
        """True when both profiles are within ``profile`` and the hit count within ``hits``."""
        return self.longitudinal <= profile and self.radial <= profile and self.hits <= hits


def profile_agreement(reference: np.ndarray, generated: np.ndarray, geometry: Geometry | CellGeometry) -> ProfileAgreement:
    """Compare mean longitudinal and radial profiles, hit counts and totals of ``(N, voxels)`` and ``(M, voxels)`` shower sets."""

    def worst(ref: np.ndarray, gen: np.ndarray) -> float:
        keep = ref / ref.sum() > 0.01
        return float(np.max(np.abs(gen[keep] / ref[keep] - 1.0)))

    ref_long, gen_long = geometry.layer_energies(reference).mean(0), geometry.layer_energies(generated).mean(0)
    ref_rad, gen_rad = radial_energies(reference, geometry).mean(0), radial_energies(generated, geometry).mean(0)
    return ProfileAgreement(
        longitudinal=worst(ref_long, gen_long),
        radial=worst(ref_rad, gen_rad),
        hits=float(abs(hit_counts(generated, geometry).mean() / hit_counts(reference, geometry).mean() - 1.0)),
        response=float(abs(generated.sum(axis=1, dtype=np.float64).mean() / reference.sum(axis=1, dtype=np.float64).mean() - 1.0)),
    )
