"""How voxels group into what the energy and radial models generate: layers, rings and radial slots.

The energy model generates one energy per group of :func:`energy_groups`: a layer among :func:`model_layers`, or a
ring (one radial bin of one layer; on a cell geometry a hexagonal ring, :func:`layer_rings`). The radial model sees
the fractions of every layer's energy in its rings on a ``(L, R_max)`` grid of slots (:func:`radial_slots`,
:func:`radial_vector`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from calogen.errors import CalogenError
from calogen.geometry import Geometry

if TYPE_CHECKING:
    from calogen.cell_geometry import CellGeometry

__all__ = [
    "ENERGY_GROUPS", "energy_groups", "group_sums", "layer_rings", "layer_vector", "model_layers", "radial_slots", "radial_used", "radial_vector",
]  # fmt: skip


ENERGY_GROUPS = ("layers", "rings")
"""Groupings of the voxels whose energies the energy model generates: whole layers, or rings (one
radial bin of one layer, all alpha bins)."""


def model_layers(geometry: Geometry | CellGeometry) -> list[int]:
    """Layers the energy model generates: the non-empty ones of a cylindrical geometry, every layer of a cell geometry."""
    return list(range(geometry.n_layers)) if geometry.kind == "cells" else list(geometry.nonempty_layers)


def layer_rings(geometry: Geometry | CellGeometry, layer: int) -> np.ndarray:
    """Ring ``0..n - 1`` of every voxel of ``layer``: its radial bin, or for a cell geometry its hexagonal ring
    around the central cell (ranked among the layer's rings, so they have no gaps)."""
    if geometry.kind == "cells":
        return np.unique(geometry.layers[layer].ring, return_inverse=True)[1].astype(np.int64)
    sl = geometry.layer_slice(layer)
    return np.arange(sl.stop - sl.start) % geometry.layers[layer].n_r


def energy_groups(geometry: Geometry | CellGeometry, kind: str = "layers") -> np.ndarray:
    """Group index ``(voxels,)`` of every voxel: its layer among :func:`model_layers`, or its ring.

    Rings (:func:`layer_rings`) are numbered layer by layer, radial bins inside each.
    """
    if kind not in ENERGY_GROUPS:
        raise CalogenError(f"unknown energy grouping {kind!r}; use one of {ENERGY_GROUPS}")
    layers = model_layers(geometry)
    if kind == "layers":
        return np.searchsorted(np.asarray(layers), geometry.voxel_layer)
    groups, first = np.empty(geometry.n_voxels, dtype=np.int64), 0
    for i in layers:
        rings = layer_rings(geometry, i)
        groups[geometry.layer_slice(i)] = first + rings
        first += int(rings.max()) + 1
    return groups


def group_sums(showers: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Energy per group ``(N, G)`` (float64) of showers ``(N, voxels)``."""
    from scipy.sparse import csr_matrix

    n_groups = int(groups.max()) + 1
    one_hot = csr_matrix((np.ones(groups.size), (np.arange(groups.size), groups)), shape=(groups.size, n_groups))
    return np.asarray((one_hot.T @ np.asarray(showers, dtype=np.float64).T).T)


def layer_vector(geometry: Geometry | CellGeometry, showers: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Deposited energy and per-group fractions ``(N, 1 + G)`` (float64): the energy model's vector.

    Column 0 is the total deposit in MeV; columns 1.. are ``E_g / E_dep`` (0 for an empty shower) for the
    groups of :func:`energy_groups` (default: the non-empty layers).
    """
    layers = group_sums(showers, energy_groups(geometry) if groups is None else groups)
    total = layers.sum(axis=1, keepdims=True)
    fractions = np.divide(layers, total, out=np.zeros_like(layers), where=total > 0)
    return np.concatenate([total, fractions], axis=1)


def radial_slots(geometry: Geometry | CellGeometry) -> tuple[np.ndarray, int]:
    """Slot ``l * R_max + r`` of every ring (in :func:`energy_groups` ``rings`` order) and ``R_max``.

    ``l`` counts :func:`model_layers` and ``R_max`` is their largest number of rings; slots of
    layers with fewer rings stay unused.
    """
    counts = [int(layer_rings(geometry, i).max()) + 1 for i in model_layers(geometry)]
    n_r = max(counts)
    slots = [k * n_r + r for k, count in enumerate(counts) for r in range(count)]
    return np.asarray(slots, dtype=np.int64), n_r


def radial_used(geometry: Geometry | CellGeometry) -> np.ndarray:
    """Boolean mask ``(L * R_max,)`` of the slots that belong to a ring."""
    slots, n_r = radial_slots(geometry)
    used = np.zeros(len(model_layers(geometry)) * n_r, dtype=bool)
    used[slots] = True
    return used


def radial_vector(geometry: Geometry | CellGeometry, showers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radial fractions ``(N, L * R_max)`` (float64; 0 in unused slots and empty layers) and the
    non-empty mask ``(N, L * R_max)`` of the slots that carry data."""
    slots, n_r = radial_slots(geometry)
    rings = group_sums(showers, energy_groups(geometry, "rings"))
    n_layers = len(model_layers(geometry))
    grid = np.zeros((rings.shape[0], n_layers * n_r))
    grid[:, slots] = rings
    grid = grid.reshape(-1, n_layers, n_r)
    layer = grid.sum(axis=2, keepdims=True)
    fractions = np.divide(grid, layer, out=np.zeros_like(grid), where=layer > 0).reshape(rings.shape[0], -1)
    mask = np.repeat(layer[:, :, 0] > 0, n_r, axis=1) & radial_used(geometry)
    return fractions, mask
