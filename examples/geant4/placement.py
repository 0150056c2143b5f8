"""Placing generated showers in the detector, and reading an event back in a shower's own mesh.

A calogen shower is a set of voxels: voxel ``(layer, alpha, r)`` sits at ``local = (r cos alpha, r sin alpha,
z)`` in the shower frame (bin centres, ``z`` the layer's mid-depth, mm). A frame (:func:`frame`) is a matrix
``F`` ``(3, 3)`` taking it to the detector, ``x = entry + F local``, and its inverse transpose ``B``, which
takes a point back, ``local = B^T (x - entry)``. There are two kinds:

* Rotated (a model not conditioned on the direction): ``F = R(u) = R_z(p) R_y(t)``, the rotation Geant4's
  Par04 uses, turns the shower axis onto the entry direction ``u = (sin t cos p, sin t sin p, cos t)``;
  ``B = F``. The shower is the normal-incidence shower, rotated.
* Layer-normal (a model conditioned on the direction): the layers stay perpendicular to the detector's
  layer normal ``n`` at the entry point (turned into the calorimeter, ``u . n > 0``) and every layer's bins
  are centred on the particle's straight trajectory, as calogen's readout scores showers at incidence
  ``(theta, phi)`` (:mod:`calogen.sim.readout`): ``theta`` is the angle of ``u`` to ``n``, the mesh's
  ``alpha = 0`` axis ``e1`` is the lean (the unit projection of ``u`` on the layer plane), so ``phi = 0``,
  and ``e2 = n x e1``. Layer ``l``'s bins sit at ``entry + (z_l / cos theta) u + r cos(alpha) e1 +
  r sin(alpha) e2``: ``F = [e1, e2, u / cos theta]`` (a shear, not a rotation) and
  ``B = [e1 - tan(theta) n, e2, n]``. At normal incidence ``e1`` is ``R(n)``'s x axis, so both kinds agree.

Example:
    >>> import numpy as np
    >>> R = rotation(np.array([0.0, 1.0, 0.0]))
    >>> np.round(R @ [0.0, 0.0, 1.0], 12).tolist()        # the shower axis follows the direction
    [0.0, 1.0, 0.0]
    >>> u = np.array([0.0, np.cos(0.3), np.sin(0.3)])      # 0.3 rad from the normal (0, 1, 0)
    >>> np.round(incidence(u[None], np.array([[0.0, 1.0, 0.0]])), 12).tolist()
    [[0.3, 0.0]]
    >>> F, _ = frame(u, np.array([0.0, 1.0, 0.0]))
    >>> np.round(F @ [0.0, 0.0, 10.0], 12).tolist()        # layer depth 10 mm: on the trajectory, 10 mm deep
    [0.0, 10.0, 3.093362496096]
"""

from __future__ import annotations

import math

import numpy as np

from calogen.geometry import Geometry

__all__ = ["frame", "incidence", "local_centres", "mesh_row", "place", "rotation"]


def rotation(direction: np.ndarray) -> np.ndarray:
    """``R_z(phi) R_y(theta)`` ``(3, 3)`` for a direction ``(3,)`` (any length > 0)."""
    u = np.asarray(direction, dtype=np.float64) / np.linalg.norm(direction)
    theta, phi = math.acos(max(-1.0, min(1.0, u[2]))), math.atan2(u[1], u[0])
    ct, st, cp, sp = math.cos(theta), math.sin(theta), math.cos(phi), math.sin(phi)
    r_y = np.array([[ct, 0.0, st], [0.0, 1.0, 0.0], [-st, 0.0, ct]])
    r_z = np.array([[cp, -sp, 0.0], [sp, cp, 0.0], [0.0, 0.0, 1.0]])
    return r_z @ r_y


def _lean(directions: np.ndarray, normals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit directions ``u``, normals turned along them ``n`` (``u . n >= 0``) and the leans ``u - (u . n) n``, ``(N, 3)`` each."""
    u = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    n = normals / np.linalg.norm(normals, axis=-1, keepdims=True)
    n = np.where(np.sum(u * n, axis=-1, keepdims=True) < 0, -n, n)
    return u, n, u - np.sum(u * n, axis=-1, keepdims=True) * n


def incidence(directions: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Incident directions ``(N, 2)`` ``(theta, phi)`` rad of ``directions (N, 3)`` to the layer ``normals (N, 3)``.

    ``theta`` is the angle to the normal turned into the calorimeter, in ``[0, pi/2]``; ``phi`` is 0, the
    layer-normal frame's ``alpha = 0`` axis being the lean (see :func:`frame`).
    """
    u, n, lean = _lean(np.asarray(directions, dtype=np.float64), np.asarray(normals, dtype=np.float64))
    theta = np.arctan2(np.linalg.norm(lean, axis=-1), np.sum(u * n, axis=-1))
    return np.stack([theta, np.zeros_like(theta)], axis=-1)


def frame(direction: np.ndarray, normal: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The shower frame ``F`` ``(3, 3)`` and ``B = F^-T`` of one shower: rotated onto ``direction (3,)`` without a
    ``normal``, else the layer-normal frame of the layer ``normal (3,)`` (see the module docstring)."""
    if normal is None:
        r = rotation(direction)
        return r, r
    u, n, lean = (a[0] for a in _lean(np.asarray(direction, dtype=np.float64)[None], np.asarray(normal, dtype=np.float64)[None]))
    sin_t, cos_t = float(np.linalg.norm(lean)), float(u @ n)
    e1 = lean / sin_t if sin_t > 1e-12 else rotation(n)[:, 0]
    e2 = np.cross(n, e1)
    tan_t = sin_t / cos_t
    return np.stack([e1, e2, n + tan_t * e1], axis=1), np.stack([e1 - tan_t * n, e2, n], axis=1)


def local_centres(geometry: Geometry) -> np.ndarray:
    """Every voxel's centre in the shower frame, ``(voxels, 3)`` mm."""
    mid = np.array([0.5 * sum(layer.z_range) for layer in geometry.layers])
    return np.stack([geometry.voxel_eta, geometry.voxel_phi, mid[geometry.voxel_layer]], axis=1)


def place(
    showers: np.ndarray, entries: np.ndarray, directions: np.ndarray, centres: np.ndarray, normals: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Deposits of showers ``(N, voxels)`` MeV entering at ``entries (N, 3)`` mm along ``directions (N, 3)``, in
    rotated frames, or with ``normals (N, 3)`` in layer-normal frames (:func:`frame`).

    Returns:
        Points ``(H, 3)`` mm and energies ``(H,)`` MeV of the voxels with energy, shower after shower.
    """
    points, energies = [], []
    for i, (shower, entry, direction) in enumerate(zip(showers, entries, directions, strict=True)):
        hit = np.flatnonzero(shower)
        forward, _ = frame(direction, None if normals is None else normals[i])
        points.append(entry + centres[hit] @ forward.T)
        energies.append(shower[hit])
    return np.concatenate(points) if points else np.empty((0, 3)), np.concatenate(energies) if energies else np.empty(0, np.float32)


def mesh_row(
    geometry: Geometry, points: np.ndarray, energies: np.ndarray, entry: np.ndarray, direction: np.ndarray, normal: np.ndarray | None = None
) -> np.ndarray:
    """Deposits binned in the geometry's voxels of the shower frame at ``entry`` along ``direction`` (rotated, or
    layer-normal with a ``normal``, as :func:`place` puts them), ``(voxels,)`` float32 MeV.

    Deposits outside the mesh (behind it, beyond its radius, before its front) are left out.
    """
    local = (points - entry) @ frame(direction, normal)[1]
    r, alpha, z = np.hypot(local[:, 0], local[:, 1]), np.arctan2(local[:, 1], local[:, 0]), local[:, 2]
    row = np.zeros(geometry.n_voxels, dtype=np.float64)
    for i in geometry.nonempty_layers:
        layer = geometry.layers[i]
        inside = (z >= layer.z_range[0]) & (z < layer.z_range[1]) & (r < layer.r_edges[-1]) & (r >= layer.r_edges[0])
        r_bin = np.searchsorted(layer.r_edges, r[inside], side="right") - 1
        a_bin = np.clip(np.floor((alpha[inside] + math.pi) / (2 * math.pi) * layer.n_alpha).astype(np.int64), 0, layer.n_alpha - 1)
        np.add.at(row, geometry.layer_offsets[i] + a_bin * layer.n_r + r_bin, energies[inside])
    return row.astype(np.float32)
