"""Scoring energy deposits into the voxels of any :class:`~calogen.geometry.Geometry`.

The readout knows nothing about physics: it maps a point ``(x, y, z)`` in mm (z along the shower axis,
z = 0 at the calorimeter front) to a flat voxel index, or -1 when the point lies outside every voxel
(beyond the last radial edge, in front of or behind the layers, or in an empty layer).

Layer ``i`` covers ``z_lo[i] <= z < z_hi[i]``; radial bin ``k`` covers ``r_edges[k] <= r < r_edges[k+1]``;
alpha = atan2(y, x) is binned uniformly on [-pi, pi). The arrays live in a :class:`ReadoutTables`
so that compiled transport code can call :func:`voxel_index` without Python objects.

Example:
    >>> from calogen.geometry import Geometry
    >>> t = ReadoutTables.from_geometry(Geometry.builtin("ds2"))
    >>> int(voxel_index(t.z_lo, t.z_hi, t.r_edges, t.n_r, t.n_alpha, t.offsets, 1.0, 0.0, 1.0))
    72
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np

from calogen.geometry import Geometry

__all__ = ["CALOCHALLENGE_SAMPLING_SCALE", "ReadoutTables", "score_deposits", "voxel_index"]

CALOCHALLENGE_SAMPLING_SCALE = 1.0 / 0.033
"""CaloChallenge DS2/DS3 convention: silicon deposits are divided by the 3.3% sampling fraction."""


@dataclass(frozen=True)
class ReadoutTables:
    """Flat arrays describing a geometry for compiled code.

    Attributes:
        z_lo, z_hi: depth extent of every layer in mm, ``(L,)`` float64.
        r_edges: radial edges padded with +inf, ``(L, max_n_r + 1)`` float64.
        n_r, n_alpha, offsets: per-layer radial bins, alpha bins and voxel offset, ``(L,)`` int64.
        n_voxels: total number of voxels.
    """

    z_lo: np.ndarray
    z_hi: np.ndarray
    r_edges: np.ndarray
    n_r: np.ndarray
    n_alpha: np.ndarray
    offsets: np.ndarray
    n_voxels: int

    @classmethod
    def from_geometry(cls, geometry: Geometry) -> ReadoutTables:
        """Build the tables of ``geometry``."""
        layers = geometry.layers
        width = max(len(layer.r_edges) for layer in layers)
        r_edges = np.full((len(layers), width), np.inf)
        for i, layer in enumerate(layers):
            r_edges[i, : len(layer.r_edges)] = layer.r_edges
        return cls(
            z_lo=np.array([layer.z_range[0] for layer in layers], dtype=np.float64),
            z_hi=np.array([layer.z_range[1] for layer in layers], dtype=np.float64),
            r_edges=r_edges,
            n_r=np.array([layer.n_r for layer in layers], dtype=np.int64),
            n_alpha=np.array([layer.n_alpha for layer in layers], dtype=np.int64),
            offsets=np.asarray(geometry.layer_offsets[:-1], dtype=np.int64),
            n_voxels=geometry.n_voxels,
        )


@nb.njit(cache=True, nogil=True)
def voxel_index(
    z_lo: np.ndarray,
    z_hi: np.ndarray,
    r_edges: np.ndarray,
    n_r: np.ndarray,
    n_alpha: np.ndarray,
    offsets: np.ndarray,
    x: float,
    y: float,
    z: float,
) -> int:
    """Flat voxel index of the point (x, y, z) in mm, or -1 outside the readout."""
    layer = -1
    for i in range(z_lo.shape[0]):
        if z_lo[i] <= z < z_hi[i]:
            layer = i
            break
    if layer < 0 or n_r[layer] == 0:
        return -1
    r = math.sqrt(x * x + y * y)
    nr = n_r[layer]
    if r < r_edges[layer, 0] or r >= r_edges[layer, nr]:
        return -1
    lo = 0
    hi = nr
    while hi - lo > 1:  # r_edges[layer, lo] <= r < r_edges[layer, hi]
        mid = (lo + hi) // 2
        if r >= r_edges[layer, mid]:
            lo = mid
        else:
            hi = mid
    na = n_alpha[layer]
    a = int((math.atan2(y, x) + math.pi) / (2.0 * math.pi) * na)
    if a >= na:
        a = na - 1
    return offsets[layer] + a * nr + lo


@nb.njit(cache=True)
def _score(
    z_lo: np.ndarray,
    z_hi: np.ndarray,
    r_edges: np.ndarray,
    n_r: np.ndarray,
    n_alpha: np.ndarray,
    offsets: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    e: np.ndarray,
    scale: float,
    out: np.ndarray,
) -> float:
    outside = 0.0
    for k in range(x.shape[0]):
        v = voxel_index(z_lo, z_hi, r_edges, n_r, n_alpha, offsets, x[k], y[k], z[k])
        if v < 0:
            outside += e[k]
        else:
            out[v] += e[k] * scale
    return outside


def score_deposits(
    tables: ReadoutTables,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    e: np.ndarray,
    *,
    scale: float = 1.0,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Add deposits ``e`` (MeV) at points (x, y, z) (mm) to a voxel array.

    Args:
        tables: readout of the target geometry.
        x, y, z, e: deposit positions and energies, ``(K,)`` each.
        scale: factor applied to every scored deposit (e.g. :data:`CALOCHALLENGE_SAMPLING_SCALE`).
        out: ``(n_voxels,)`` float64 accumulator; a new zero array when omitted.

    Returns:
        The accumulator and the unscaled energy of deposits that fell outside the readout.
    """
    if out is None:
        out = np.zeros(tables.n_voxels, dtype=np.float64)
    arrays = [np.ascontiguousarray(a, dtype=np.float64) for a in (x, y, z, e)]
    outside = _score(
        tables.z_lo, tables.z_hi, tables.r_edges, tables.n_r, tables.n_alpha, tables.offsets, *arrays, float(scale), out
    )
    return out, float(outside)
