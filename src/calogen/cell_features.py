"""Shower features of cell geometries, as the HGCal challenge defines them, computed chunk by chunk.

For every shower, after zeroing cells below the per-cell threshold ``t`` (``E_c < t -> 0``), with the
cell centres ``x``, ``y`` in mm relative to each layer's central cell:

* the incident energy ``E_inc``, the deposited energy ``E_tot`` and the ratio ``E_tot / E_inc``;
* the energy per layer ``E_l``;
* per layer the energy-weighted centre and width in x and y::

      <x>_l = sum x E / E_l,   width_x = sqrt(<x^2>_l - <x>_l^2)

  with centre and width 0 for a layer without energy (and width 0 where rounding makes the variance
  negative), as ``WeightedMean`` and ``GetWidth`` of the challenge's ``utils.py`` do;
* the occupancy per layer: the number of cells with energy above the threshold.

The challenge's classifier vector is ``E_inc``, the ratio, then x centres, x widths, y centres, y widths
and occupancies of every layer (``compute_feats`` of its ``hgcal_metrics.py``); :func:`challenge_vector`
gives it in that order, and :meth:`CellFeatures.table` every feature by name. The threshold defaults to
the geometry's ``threshold``.

Example:
    >>> from calogen.cell_geometry import CellGeometry
    >>> g = CellGeometry.builtin("tiny-hex")
    >>> showers = np.zeros((1, g.n_voxels)); showers[0, [1, 4]] = 2.0  # ring 1 at 30 and 210 degrees
    >>> f = compute_cell_features(np.array([10.0]), showers, g)
    >>> float(f.e_ratio[0]), float(f.x_centre[0, 0]), float(f.x_width[0, 0]), int(f.occupancy[0, 0])
    (0.4, 0.0, 10.392304845413264, 2)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from calogen.cell_geometry import CellGeometry
from calogen.errors import CalogenError

__all__ = ["CellFeatureError", "CellFeatures", "cell_features_from_file", "challenge_column_names", "challenge_vector", "compute_cell_features"]

CHUNK_BYTES = 128 << 20
"""Default streaming chunk: about 128 MiB of float64 cells."""
_PER_LAYER = ("e_layer", "x_centre", "x_width", "y_centre", "y_width", "occupancy")
_CHALLENGE_BLOCKS = ("x_centre", "x_width", "y_centre", "y_width", "occupancy")


class CellFeatureError(CalogenError):
    """Showers do not fit the cell geometry or hold invalid values."""


@dataclass(frozen=True)
class CellFeatures:
    """Per-shower features of one sample (``N`` showers, ``L`` layers of ``geometry``).

    Args:
        e_inc: ``(N,)`` incident energies, MeV.
        e_total: ``(N,)`` deposited energy after the threshold, MeV.
        e_layer: ``(N, L)`` energy per layer, MeV.
        x_centre, y_centre: ``(N, L)`` energy-weighted centres in mm (0 for a layer without energy).
        x_width, y_width: ``(N, L)`` energy-weighted widths in mm (0 for a layer without energy).
        occupancy: ``(N, L)`` int64 cells above the threshold.
        mean_shower: ``(voxels,)`` average shower after the threshold, MeV.
        threshold: per-cell threshold applied, MeV.
        geometry: the cell geometry.
    """

    e_inc: np.ndarray
    e_total: np.ndarray
    e_layer: np.ndarray
    x_centre: np.ndarray
    y_centre: np.ndarray
    x_width: np.ndarray
    y_width: np.ndarray
    occupancy: np.ndarray
    mean_shower: np.ndarray
    threshold: float
    geometry: CellGeometry

    @property
    def n_showers(self) -> int:
        """Number of showers N."""
        return int(self.e_inc.shape[0])

    @property
    def e_ratio(self) -> np.ndarray:
        """``(N,)`` ``E_tot / E_inc``."""
        return self.e_total / self.e_inc

    def table(self) -> dict[str, np.ndarray]:
        """Every feature as a named ``(N,)`` column: ``e_inc``, ``e_total``, ``e_ratio``, then ``<feature>_<layer>``."""
        columns = {"e_inc": self.e_inc, "e_total": self.e_total, "e_ratio": self.e_ratio}
        for name in _PER_LAYER:
            values = getattr(self, name)
            columns.update({f"{name}_{i}": values[:, i] for i in range(self.geometry.n_layers)})
        return columns


def challenge_column_names(geometry: CellGeometry) -> list[str]:
    """Names of the :func:`challenge_vector` columns: ``e_inc``, ``e_ratio``, ``x_centre_0``, ..., ``occupancy_<L-1>``."""
    return ["e_inc", "e_ratio"] + [f"{name}_{i}" for name in _CHALLENGE_BLOCKS for i in range(geometry.n_layers)]


def challenge_vector(features: CellFeatures) -> np.ndarray:
    """The challenge's classifier features, ``(N, 2 + 5 L)`` float64, in :func:`challenge_column_names` order."""
    parts = [features.e_inc[:, None], features.e_ratio[:, None]] + [getattr(features, name) for name in _CHALLENGE_BLOCKS]
    return np.concatenate(parts, axis=1).astype(np.float64)


def _layer_moments(showers: np.ndarray, geometry: CellGeometry) -> dict[str, np.ndarray]:
    """Centres, widths, energies and occupancies per layer of thresholded ``(n, voxels)`` float64 showers."""
    starts = geometry.layer_offsets[:-1]
    e_layer = np.add.reduceat(showers, starts, axis=1)
    out = {"e_layer": e_layer, "occupancy": np.add.reduceat(showers > 0, starts, axis=1).astype(np.int64)}
    safe = np.where(e_layer > 0, e_layer, 1.0)
    for axis, coord in (("x", geometry.cell_x), ("y", geometry.cell_y)):
        first = np.add.reduceat(showers * coord, starts, axis=1) / safe
        second = np.add.reduceat(showers * coord**2, starts, axis=1) / safe
        empty = e_layer <= 0
        out[f"{axis}_centre"] = np.where(empty, 0.0, first)
        out[f"{axis}_width"] = np.where(empty, 0.0, np.sqrt(np.maximum(second - first**2, 0.0)))
    return out


def _check(energies: np.ndarray, showers: np.ndarray, geometry: CellGeometry) -> None:
    if showers.ndim != 2 or showers.shape[1] != geometry.n_voxels:
        raise CellFeatureError(f"expected (N, {geometry.n_voxels}) showers for {geometry.name!r}, got shape {showers.shape}")
    if energies.shape != (showers.shape[0],):
        raise CellFeatureError(f"{energies.shape[0]} incident energies for {showers.shape[0]} showers")
    if not (np.isfinite(showers).all() and np.isfinite(energies).all() and (energies > 0).all()):
        raise CellFeatureError("showers and incident energies must be finite, incident energies > 0")


def compute_cell_features(
    energies: np.ndarray, showers: np.ndarray, geometry: CellGeometry, *, threshold: float | None = None, chunk_size: int | None = None
) -> CellFeatures:
    """Features of in-memory showers: ``energies`` ``(N,)``/``(N, 1)`` MeV, ``showers`` ``(N, voxels)`` MeV.

    ``threshold`` (MeV) defaults to ``geometry.threshold``.
    """
    threshold = geometry.threshold if threshold is None else threshold
    energies = np.asarray(energies, dtype=np.float64).reshape(-1)
    showers = np.asarray(showers)
    _check(energies, showers, geometry)
    rows = chunk_size or max(1, CHUNK_BYTES // (8 * geometry.n_voxels))
    parts = [_chunk(energies[s : s + rows], showers[s : s + rows], geometry, threshold) for s in range(0, max(len(energies), 1), rows)]
    return _merge(parts, geometry, threshold)


def _chunk(energies: np.ndarray, showers: np.ndarray, geometry: CellGeometry, threshold: float) -> dict[str, np.ndarray]:
    cut = np.where(showers < threshold, 0.0, showers.astype(np.float64))
    out = _layer_moments(cut, geometry)
    out["e_inc"], out["e_total"], out["shower_sum"] = energies, out["e_layer"].sum(axis=1), cut.sum(axis=0)
    return out


def _merge(parts: list[dict[str, np.ndarray]], geometry: CellGeometry, threshold: float) -> CellFeatures:
    joined = {key: np.concatenate([p[key] for p in parts]) for key in ("e_inc", "e_total", *_PER_LAYER)}
    n = max(len(joined["e_inc"]), 1)
    mean_shower = np.sum([p["shower_sum"] for p in parts], axis=0) / n
    return CellFeatures(**joined, mean_shower=mean_shower, threshold=threshold, geometry=geometry)


def cell_features_from_file(
    path: str | os.PathLike[str], geometry: CellGeometry, *, threshold: float | None = None, chunk_size: int | None = None
) -> CellFeatures:
    """Stream a calogen shower file chunk by chunk into :class:`CellFeatures` (the voxel count is checked)."""
    threshold = geometry.threshold if threshold is None else threshold
    from calogen.io import ShowerFile

    rows = chunk_size or max(1, CHUNK_BYTES // (8 * geometry.n_voxels))
    with ShowerFile(path, geometry) as f:  # type: ignore[arg-type]
        parts = [_chunk(c.energies.reshape(-1).astype(np.float64), c.showers, geometry, threshold) for c in f.iter_chunks(rows)]
    if not parts:
        raise CellFeatureError(f"{path} holds no showers")
    return _merge(parts, geometry, threshold)
