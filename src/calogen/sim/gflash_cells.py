"""GFLASH calibration on cell readouts: energy per hexagonal ring, and the ring a spot at radius r lands in.

On a cell readout (:class:`~calogen.cell_geometry.CellGeometry`) the radial profile is the energy per hexagonal
ring around the central cell (``cell_ring``), summed over layers. GFLASH's radial density is a function of a
spot's distance r from the shower axis, so the calibration (:mod:`calogen.sim.calibrate`) integrates it over thin
shells ``[r_k, r_k+1)`` around the shower axis and maps shells to rings with :func:`ring_acceptance`: the
probability that a spot of the shell, at uniform azimuth phi, lies in a cell of ring b,

    A[k, b] = P(ring(axis + r (cos phi, sin phi)) = b | r_k <= r < r_k+1),

sampled on a grid of radii and azimuths and averaged over layers (weighted, e.g. by their mean energy). A
shell's row sums to less than 1 where part of it lies outside the layer's cells (lateral leakage).

In every layer the shower axis crosses the readout frame where the trajectory crosses the layer's depth centre,
relative to the layer's central cell (:func:`~calogen.sim.readout.readout_arrays`): the cell's centre at normal
incidence through the origin, anywhere inside it otherwise. An inclined axis (theta, phi) meets the layer plane in
an ellipse: a spot at ``(x, y)`` across the axis (x in the plane of incidence) lands at ``(x / cos theta, y)``
in the layer, rotated by phi.

Example:
    >>> from calogen.cell_geometry import CellGeometry
    >>> g = CellGeometry.builtin("tiny-hex")
    >>> a = ring_acceptance(g, shell_edges(g))
    >>> a.shape, bool(np.allclose(a[0], [1, 0, 0]))
    ((18, 3), True)
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from calogen.cell_geometry import CellGeometry, cell_voxel
from calogen.models.voxel_groups import group_sums
from calogen.sim.readout import Incidence, readout_arrays

__all__ = ["ring_acceptance", "ring_energies", "shell_edges"]

SHELLS_PER_PITCH = 6
"""Radial shells per cell pitch in :func:`shell_edges` (2 mm for 12 mm cells)."""


def ring_energies(showers: np.ndarray, geometry: CellGeometry) -> np.ndarray:
    """Energy per hexagonal ring summed over layers, ``(N, n_rings)`` float64, of ``(N, n_voxels)`` showers."""
    return group_sums(showers, geometry.cell_ring)


def shell_edges(geometry: CellGeometry) -> np.ndarray:
    """Shell edges (mm) from 0 to one pitch beyond the outermost ring's centres, :data:`SHELLS_PER_PITCH` shells per pitch."""
    pitch = max(layer.pitch for layer in geometry.layers)
    n_pitches = int(geometry.cell_ring.max()) + 1
    return np.linspace(0.0, n_pitches * pitch, n_pitches * SHELLS_PER_PITCH + 1)


@nb.njit(cache=True)
def _voxels(pitch: np.ndarray, table: np.ndarray, half: int, row: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """:func:`cell_voxel` of every point ``(x[i], y[i])`` in layer ``row``, -1 outside, ``(n,)``."""
    out = np.empty(x.size, dtype=np.int64)
    for i in range(x.size):
        out[i] = cell_voxel(pitch, table, half, row, x[i], y[i])
    return out


def ring_acceptance(
    geometry: CellGeometry,
    edges: np.ndarray,
    incidence: Incidence = Incidence(),
    weights: np.ndarray | None = None,
    *,
    n_radii: int = 8,
    n_phi: int = 120,
) -> np.ndarray:
    """Probability that a spot in shell k (uniform in area and azimuth) lies in ring b, ``(len(edges) - 1, n_rings)``.

    Args:
        geometry: a cell geometry whose layers are hexagonal lattices (GeometryError otherwise).
        edges: shell edges in mm across the shower axis, increasing, ``(K + 1,)``.
        incidence: the primary's direction and entry point; the readout follows its trajectory.
        weights: weight of every layer ``(n_layers,)`` (e.g. its mean energy); equal when omitted.
        n_radii, n_phi: sample radii per shell (equal-area midpoints) and azimuths per radius.
    """
    ro = readout_arrays(geometry, incidence)
    cross_x, cross_y = incidence.crossing(0.5 * (ro.z_lo + ro.z_hi))
    weights = np.ones(geometry.n_layers) if weights is None else np.asarray(weights, dtype=np.float64)
    lo, hi = edges[:-1, None] ** 2, edges[1:, None] ** 2
    radii = np.sqrt(lo + (hi - lo) * (np.arange(n_radii) + 0.5) / n_radii)  # (K, n_radii)
    angle = 2.0 * math.pi * (np.arange(n_phi) + 0.5) / n_phi
    u = (radii[:, :, None] * np.cos(angle)).ravel() / math.cos(incidence.theta)  # in the plane of incidence
    v = (radii[:, :, None] * np.sin(angle)).ravel()
    cos_phi, sin_phi = math.cos(incidence.phi), math.sin(incidence.phi)
    x, y = u * cos_phi - v * sin_phi, u * sin_phi + v * cos_phi
    rings = np.append(geometry.cell_ring, -1)  # voxel -1 (outside) -> ring -1
    out = np.zeros((edges.size - 1, int(geometry.cell_ring.max()) + 1))
    shell = np.repeat(np.arange(edges.size - 1), n_radii * n_phi)
    for row in np.flatnonzero(weights > 0):
        dx, dy = cross_x[row] - ro.cx[row], cross_y[row] - ro.cy[row]
        ring = rings[_voxels(ro.pitch, ro.table, ro.half, int(row), x + dx, y + dy)]
        inside = ring >= 0
        np.add.at(out, (shell[inside], ring[inside]), weights[row])
    return out / (n_radii * n_phi * weights.sum())
