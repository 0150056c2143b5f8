"""Expected (noise-free) layer and radial energy fractions of GFLASH showers at fixed normals, for the calibration.

:class:`Expectation` gives the longitudinal profile as Gamma CDF differences at the layer edges, the radial
containment of every layer, and the radial profile from the analytic radial CDF of every depth step
(:mod:`calogen.sim.calibrate`, stages 1 and 2). On a cell readout the radial bins are thin shells mapped to
hexagonal rings (:mod:`calogen.sim.gflash_cells`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import gammainc

from calogen.cell_geometry import CellGeometry
from calogen.geometry import Geometry, GeometryError
from calogen.sim.gflash_cells import ring_acceptance, shell_edges
from calogen.sim.gflash_longitudinal import gamma_rate, longitudinal_parameters, origin
from calogen.sim.gflash_params import GflashParameters
from calogen.sim.gflash_radial import calibrate_radial, published_radial
from calogen.sim.gflash_spots import STEP_X0, depth_steps
from calogen.sim.readout import Incidence
from calogen.sim.shower_profiles import CalibrationError, radial_edges

if TYPE_CHECKING:
    from calogen.sim.calibrate import EnergyGroup

__all__ = ["Expectation"]


@dataclass(frozen=True)
class _RadialBins:
    """Fine radius edges ``(K + 1,)`` mm of the expected profile and the probability ``(K, B)`` that a spot of
    fine bin k lands in readout bin b (the identity for cylinders)."""

    edges: np.ndarray
    acceptance: np.ndarray


def _radial_bins(geometry: Geometry | CellGeometry, incidence: Incidence, layer_weights: np.ndarray) -> _RadialBins:
    """Radial bins of a cylindrical readout (its shared edges) or of a cell readout (shells mapped to rings, layers
    weighted by ``layer_weights``)."""
    if geometry.kind == "cells":
        edges = shell_edges(geometry)
        try:
            return _RadialBins(edges, ring_acceptance(geometry, edges, incidence, layer_weights))
        except GeometryError as exc:
            raise CalibrationError(f"GFLASH calibration needs hexagonal-lattice cell layers: {exc}") from None
    edges = radial_edges(geometry)
    return _RadialBins(edges, np.eye(edges.size - 1))


class Expectation:
    """Expected (noise-free) layer and radial energy fractions of GFLASH showers at fixed normals."""

    def __init__(self, geometry: Geometry | CellGeometry, incidence: Incidence, layer_weights: np.ndarray) -> None:
        along_axis = 1.0 / math.cos(incidence.theta)  # a layer at depth z lies z / cos(theta) along the axis
        self.z_lo = np.array([layer.z_range[0] for layer in geometry.layers]) * along_axis
        self.z_hi = np.array([layer.z_range[1] for layer in geometry.layers]) * along_axis
        self.active = np.array([not getattr(layer, "is_empty", False) for layer in geometry.layers])
        bins = _radial_bins(geometry, incidence, layer_weights)
        self.edges, self.acceptance = bins.edges, bins.acceptance
        self.accepted = self.acceptance.sum(axis=1)  # (K,) probability that a spot of fine bin k is read out

    def longitudinal(self, group: EnergyGroup, params: GflashParameters, contained: np.ndarray | None = None) -> np.ndarray:
        """Energy fraction per layer (Gamma CDF differences at the layer edges, times ``contained``), ``(L,)``."""
        t_max, alpha = longitudinal_parameters(group.energies, group.normals, params)
        beta = gamma_rate(t_max, alpha, params)[:, None]
        front = (np.array([origin(float(e), params) for e in group.energies]) - group.starts)[:, None]
        lo = gammainc(alpha[:, None], beta * np.maximum(self.z_lo[None, :] / params.x0_mm + front, 0.0))
        hi = gammainc(alpha[:, None], beta * np.maximum(self.z_hi[None, :] / params.x0_mm + front, 0.0))
        layer = ((hi - lo) * self.active * group.energies[:, None]).sum(axis=0)
        if contained is not None:
            layer = layer * contained
        return layer / layer.sum()

    def _overlap(self, energy: float, start: float, n_steps: int, params: GflashParameters) -> np.ndarray:
        """Fraction of each of a shower's depth steps inside each layer, ``(n_steps, L)`` (``start`` X0: photon conversion)."""
        width = STEP_X0 * params.x0_mm
        lo = ((np.arange(n_steps) * STEP_X0 + start - origin(energy, params)) * params.x0_mm)[:, None]
        return np.clip(np.minimum(lo + width, self.z_hi) - np.maximum(lo, self.z_lo), 0.0, None) / width

    def containment(self, group: EnergyGroup, params: GflashParameters) -> np.ndarray:
        """Fraction of every layer's energy that the radial readout sees, ``(L,)`` (1 where a layer gets none).

        Radial leakage grows with depth (the tail radius does), so the readout sees a steeper longitudinal
        tail than the Gamma profile alone; the longitudinal fit multiplies its expectation by this.
        """
        t_max, alpha = longitudinal_parameters(group.energies, group.normals, params)
        inside, total = np.zeros(self.z_lo.size), np.zeros(self.z_lo.size)
        for e, s, t, a in zip(group.energies, group.starts, t_max, alpha, strict=True):
            steps = depth_steps(float(e), float(t), float(a), params)
            cdf = self._read_out(*steps.radial, params)
            overlap = self._overlap(float(e), float(s), steps.energy.size, params)
            weight = steps.energy * e
            inside += (weight * cdf) @ overlap
            total += weight @ overlap
        return np.where(total > 0, inside / np.maximum(total, 1e-300), 1.0)

    def radial_setup(self, group: EnergyGroup, params: GflashParameters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Over the depth steps of all model showers: published radial values ``(3, S)``, energy inside the readout
        layers ``(S,)`` MeV and the incident energy of the step's shower ``(S,)`` MeV."""
        t_max, alpha = longitudinal_parameters(group.energies, group.normals, params)
        raws, weights = [], []
        for e, s, t, a in zip(group.energies, group.starts, t_max, alpha, strict=True):
            steps = depth_steps(float(e), float(t), float(a), params)
            inside = self._overlap(float(e), float(s), steps.energy.size, params)[:, self.active].sum(axis=1)
            raws.append(published_radial(steps.tau, float(e), params))
            weights.append(steps.energy * inside * e)
        energies = np.concatenate([np.full(w.size, e) for w, e in zip(weights, group.energies, strict=True)])
        return np.concatenate(raws, axis=1), np.concatenate(weights), energies

    def _fine_bins(self, rc: np.ndarray, rt: np.ndarray, p: np.ndarray, params: GflashParameters) -> np.ndarray:
        """Fraction of every step's energy in every fine radial bin, ``(S, K)``, from the analytic radial CDF."""
        r2 = (self.edges / params.moliere_radius_mm)[None, :] ** 2
        cdf = p[:, None] * r2 / (r2 + rc[:, None] ** 2) + (1 - p[:, None]) * r2 / (r2 + rt[:, None] ** 2)
        return np.diff(cdf, axis=1)

    def _read_out(self, rc: np.ndarray, rt: np.ndarray, p: np.ndarray, params: GflashParameters) -> np.ndarray:
        """Fraction of every step's energy that lands in a readout bin, ``(S,)``."""
        return self._fine_bins(rc, rt, p, params) @ self.accepted

    def radial(self, setup: tuple[np.ndarray, np.ndarray, np.ndarray], params: GflashParameters) -> tuple[np.ndarray, float]:
        """Energy fraction per radial bin ``(n_r,)``, and the expected contained energy (MeV, before energy_scale)."""
        raw, weight, energies = setup
        per_bin = (weight @ self._fine_bins(*calibrate_radial(raw, params, energies), params)) @ self.acceptance
        return per_bin / per_bin.sum(), float(per_bin.sum())
