"""Placing generated showers in the detector, and reading an event back in a shower's own mesh.

A calogen shower is a set of voxels around its axis: voxel ``(layer, alpha, r)`` sits at
``(r cos alpha, r sin alpha, z)`` in the shower frame (bin centres, ``z`` the layer's mid-depth, mm).
The frame is turned onto the entry direction ``u = (sin t cos p, sin t sin p, cos t)`` by
``R(u) = R_z(p) R_y(t)`` — the rotation Geant4's Par04 uses — and moved to the entry point:
``x = entry + R(u) local``. :func:`mesh_row` goes the other way, binning deposits into a shower frame.

Example:
    >>> import numpy as np
    >>> R = rotation(np.array([0.0, 1.0, 0.0]))
    >>> np.round(R @ [0.0, 0.0, 1.0], 12).tolist()        # the shower axis follows the direction
    [0.0, 1.0, 0.0]
"""

from __future__ import annotations

import math

import numpy as np

from calogen.geometry import Geometry

__all__ = ["local_centres", "mesh_row", "place", "rotation"]


def rotation(direction: np.ndarray) -> np.ndarray:
    """``R_z(phi) R_y(theta)`` ``(3, 3)`` for a direction ``(3,)`` (any length > 0)."""
    u = np.asarray(direction, dtype=np.float64) / np.linalg.norm(direction)
    theta, phi = math.acos(max(-1.0, min(1.0, u[2]))), math.atan2(u[1], u[0])
    ct, st, cp, sp = math.cos(theta), math.sin(theta), math.cos(phi), math.sin(phi)
    r_y = np.array([[ct, 0.0, st], [0.0, 1.0, 0.0], [-st, 0.0, ct]])
    r_z = np.array([[cp, -sp, 0.0], [sp, cp, 0.0], [0.0, 0.0, 1.0]])
    return r_z @ r_y


def local_centres(geometry: Geometry) -> np.ndarray:
    """Every voxel's centre in the shower frame, ``(voxels, 3)`` mm."""
    mid = np.array([0.5 * sum(layer.z_range) for layer in geometry.layers])
    return np.stack([geometry.voxel_eta, geometry.voxel_phi, mid[geometry.voxel_layer]], axis=1)


def place(showers: np.ndarray, entries: np.ndarray, directions: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deposits of showers ``(N, voxels)`` MeV entering at ``entries (N, 3)`` mm along ``directions (N, 3)``.

    Returns:
        Points ``(H, 3)`` mm and energies ``(H,)`` MeV of the voxels with energy, shower after shower.
    """
    points, energies = [], []
    for shower, entry, direction in zip(showers, entries, directions, strict=True):
        hit = np.flatnonzero(shower)
        points.append(entry + centres[hit] @ rotation(direction).T)
        energies.append(shower[hit])
    return np.concatenate(points) if points else np.empty((0, 3)), np.concatenate(energies) if energies else np.empty(0, np.float32)


def mesh_row(geometry: Geometry, points: np.ndarray, energies: np.ndarray, entry: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Deposits binned in the geometry's voxels around the axis (``entry``, ``direction``), ``(voxels,)`` float32 MeV.

    Deposits outside the mesh (behind it, beyond its radius, before its front) are left out.
    """
    local = (points - entry) @ rotation(direction)
    r, alpha, z = np.hypot(local[:, 0], local[:, 1]), np.arctan2(local[:, 1], local[:, 0]), local[:, 2]
    row = np.zeros(geometry.n_voxels, dtype=np.float64)
    for i in geometry.nonempty_layers:
        layer = geometry.layers[i]
        inside = (z >= layer.z_range[0]) & (z < layer.z_range[1]) & (r < layer.r_edges[-1]) & (r >= layer.r_edges[0])
        r_bin = np.searchsorted(layer.r_edges, r[inside], side="right") - 1
        a_bin = np.clip(np.floor((alpha[inside] + math.pi) / (2 * math.pi) * layer.n_alpha).astype(np.int64), 0, layer.n_alpha - 1)
        np.add.at(row, geometry.layer_offsets[i] + a_bin * layer.n_r + r_bin, energies[inside])
    return row.astype(np.float32)
