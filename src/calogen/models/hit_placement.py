"""Which voxels of a ring the occupancy stage keeps, and what each holds (:mod:`calogen.models.occupancy`, steps 2-4).

:func:`keep_largest` keeps the ``k_g`` voxels of each ring with the largest scores (logits, or logits plus
:func:`gumbel` noise), :func:`occupy` shares each ring's energy over them above a floor (:func:`floor_at`), and
:func:`recentre` tilts a ring's energy so its centre is that of the shape network (positions from
:func:`ring_positions`). Everything is a torch operation on whole batches, so the exported ONNX graph contains it.

Example:
    >>> from calogen.models.rescale import group_members
    >>> groups = torch.tensor([0, 0, 0, 1, 1])
    >>> members = torch.from_numpy(group_members(groups.numpy()))
    >>> keep_largest(torch.tensor([[0.1, 3.0, 2.0, 5.0, 4.0]]), torch.tensor([[2.0, 1.0]]), groups, members)
    tensor([[False,  True,  True,  True, False]])
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from calogen.geometry import Geometry
from calogen.models.preprocess import sigmoid
from calogen.models.rescale import group_max, group_totals, group_values
from calogen.models.voxel_groups import energy_groups

if TYPE_CHECKING:
    from calogen.cell_geometry import CellGeometry

__all__ = ["floor_at", "gumbel", "keep_largest", "normal_cdf", "occupy", "recentre", "ring_positions"]

_RIDGE = 0.03
"""Ridge of :func:`recentre`'s tilt solve, relative to the spread of a ring's kept voxels."""

_MAX_MISS, _MAX_TILT = 4.0, 1e4
"""Bounds of :func:`recentre`'s centre miss per energy above base (ring radii; more than a tilt can move) and of its
tilt (per ring radius): keep both finite for rings with almost no energy above their base."""


def floor_at(energies: torch.Tensor, values: torch.Tensor, log_nodes: torch.Tensor) -> torch.Tensor:
    """Floor ``(B, 1)`` MeV at incident energies ``(B, 1)`` MeV: ``values (n,)`` at ``ln E = log_nodes (n,)``
    (``n >= 2``, increasing), piecewise linear in between, constant outside. No branches, so it traces."""
    x = torch.minimum(torch.maximum(torch.log(energies), log_nodes[0]), log_nodes[-1])
    i = (x >= log_nodes[:-1]).sum(dim=1, keepdim=True) - 1  # x >= the first node: 0 <= i <= n - 2
    x0, x1 = log_nodes[i], log_nodes[i + 1]
    w = (x - x0) / (x1 - x0)
    return values[i] * (1 - w) + values[i + 1] * w


def normal_cdf(noise: torch.Tensor) -> torch.Tensor:
    """``Phi(z)``: the uniform values that standard-normal ``noise`` stands for (counts and placement draw from them)."""
    return 0.5 * (1 + torch.erf(noise / math.sqrt(2)))


def gumbel(noise: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel values from standard-normal ``noise``: ``-log(-log(Phi(z)))``, ``Phi`` kept inside ``[1e-7, 1 - 1e-7]``."""
    return -torch.log(-torch.log(normal_cdf(noise).clamp(1e-7, 1 - 1e-7)))


def keep_largest(scores: torch.Tensor, counts: torch.Tensor, groups: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """Boolean mask ``(B, voxels)``: exactly ``counts (B, G)`` voxels of each group, those with the largest ``scores``.

    ``counts`` must lie in ``0..size_g``; ties are broken by the sort, so the count is always exact.
    ``groups (voxels,)`` gives the number of voxels.
    """
    b, n_voxels, k_max = scores.shape[0], groups.shape[0], members.shape[1]
    order = group_values(scores, members).argsort(dim=2, descending=True)
    ranked = members.expand(b, -1, -1).gather(2, order)  # voxel of every rank; n_voxels in the padding
    kept = (torch.arange(k_max, device=scores.device) < counts[:, :, None]).to(scores.dtype)
    mask = torch.zeros(b, n_voxels + 1, dtype=scores.dtype, device=scores.device).scatter(1, ranked.reshape(b, -1), kept.reshape(b, -1))
    return mask[:, :n_voxels] > 0


def occupy(
    logits: torch.Tensor, targets: torch.Tensor, counts: torch.Tensor, groups: torch.Tensor, members: torch.Tensor, *,
    threshold: float, floor: float | torch.Tensor, gamma: float, positions: torch.Tensor | None = None,
    scores: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """Showers ``(B, voxels)`` MeV: ``counts`` voxels per group hold exactly ``targets`` (:mod:`calogen.models.occupancy`, steps 2-4).

    Args:
        logits: ``(B, voxels)`` the shape network's voxel logits (order and weights).
        targets: ``(B, G)`` group energies MeV, each 0 or at least ``threshold`` (:func:`~calogen.models.rescale.readout_targets`).
        counts: ``(B, G)`` hits per group: 0 where the target is 0, else ``1..min(size_g, T_g / threshold)``.
        groups, members: voxel groups and :func:`~calogen.models.rescale.group_members`.
        threshold, gamma: the readout threshold and :class:`~calogen.models.occupancy.OccupancyConfig` value.
        floor: MeV, one value or ``(B, 1)`` per shower (:func:`floor_at`); values below the threshold act as it.
        positions: ``(voxels, 2)`` :func:`ring_positions`: then every ring is :func:`recentre`-d to the centre of
            ``sigmoid(logits)`` over its kept voxels (the shape network's own, unflattened); None: not.
        scores: ``(B, voxels)`` which voxels a ring keeps (its ``counts`` largest); None: ``logits``.
    """
    keep = keep_largest(logits if scores is None else scores, counts, groups, members)
    weights = torch.where(keep, sigmoid(logits) ** gamma, torch.zeros_like(logits))
    total = group_totals(weights, groups, targets.shape[1])
    # a group whose kept weights all underflowed shares equally
    weights = torch.where((total > 0).index_select(1, groups), weights, keep.to(logits.dtype))
    k = counts.to(targets.dtype)
    total = torch.where(total > 0, total, k)  # the sums of the new weights: unchanged, or the count of ones
    floor = (floor if isinstance(floor, torch.Tensor) else torch.full_like(targets[:, :1], floor)).clamp_min(threshold)
    base = torch.minimum(floor.expand_as(targets), targets / k.clamp_min(1))
    share = (targets - k * base) / total.clamp_min(torch.finfo(total.dtype).tiny)
    showers = torch.where(keep, base.index_select(1, groups) + share.index_select(1, groups) * weights, torch.zeros_like(logits))
    if positions is None:
        return showers
    return recentre(showers, keep, base, torch.where(keep, sigmoid(logits), torch.zeros_like(logits)), positions, groups, members)


def _solve_tilt(c: tuple[torch.Tensor, torch.Tensor, torch.Tensor], d: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(C^2 + mu) ^ -1 C d`` for symmetric 2x2 ``C = [[xx, xy], [xy, yy]]`` ``(B, G)`` each: ``C^-1 d`` where ``C`` is
    regular, little tilt along a direction in which the kept voxels hardly spread (``mu = (_RIDGE tr C)^2``)."""
    xx, xy, yy = c
    rx, ry = xx * d[0] + xy * d[1], xy * d[0] + yy * d[1]  # C d
    mu = (_RIDGE * (xx + yy)) ** 2
    a, b, e = xx * xx + xy * xy + mu, xy * (xx + yy), xy * xy + yy * yy + mu  # C^2 + mu
    det = (a * e - b * b).clamp_min(torch.finfo(xx.dtype).tiny)
    return (e * rx - b * ry) / det, (a * ry - b * rx) / det


def recentre(
    showers: torch.Tensor, keep: torch.Tensor, base: torch.Tensor, reference: torch.Tensor, positions: torch.Tensor,
    groups: torch.Tensor, members: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """Showers ``(B, voxels)`` whose every ring has the centre of energy of ``reference`` weights ``(B, voxels)``.

    Each kept voxel's energy above its ring's ``base (B, G)`` is multiplied by ``1 + lambda . (p - m)`` (``p`` its
    :func:`ring_positions` row, ``m`` the centre of the energies above base), ``lambda`` solved per ring; the tilt is
    scaled down where it would take a voxel below its base, so rings keep their sums and every kept voxel at least
    its base. Along a direction in which the kept voxels hardly spread (one voxel, two, or a tight cluster) the ridge
    of the solve leaves the centre short rather than tilt steeply.
    """
    n_groups = base.shape[1]
    tiny = torch.finfo(showers.dtype).tiny
    px, py = positions[:, 0], positions[:, 1]

    def sums(values: torch.Tensor) -> torch.Tensor:
        return group_totals(values, groups, n_groups)

    def per_voxel(values: torch.Tensor) -> torch.Tensor:
        return values.index_select(1, groups)

    above = torch.where(keep, showers - per_voxel(base), torch.zeros_like(showers)).clamp_min(0)  # >= 0 but for rounding
    total, extra, weight = sums(showers), sums(above), sums(reference).clamp_min(tiny)
    safe = extra.clamp_min(tiny)
    dx, dy = px - per_voxel(sums(above * px) / safe), py - per_voxel(sums(above * py) / safe)
    cov = (sums(above * dx * dx) / safe, sums(above * dx * dy) / safe, sums(above * dy * dy) / safe)
    shift = (total * (sums(reference * p) / weight - sums(showers * p) / total.clamp_min(tiny)) for p in (px, py))
    miss = tuple(torch.where(extra > 0, (s / safe).clamp(-_MAX_MISS, _MAX_MISS), torch.zeros_like(s)) for s in shift)
    lx, ly = (v.clamp(-_MAX_TILT, _MAX_TILT) for v in _solve_tilt(cov, miss))
    tilt = per_voxel(lx) * dx + per_voxel(ly) * dy
    drop = group_max(torch.where(keep, -tilt, torch.full_like(tilt, -torch.inf)), members)  # -inf: no kept voxel
    scale = 1 / drop.clamp_min(1)
    tilted = above * (1 + per_voxel(scale) * tilt)
    tilted = tilted * per_voxel(extra / sums(tilted).clamp_min(tiny))  # float rounding: the ring keeps its sum
    return torch.where(keep, per_voxel(base) + tilted, torch.zeros_like(showers))


def ring_positions(geometry: Geometry | CellGeometry) -> np.ndarray:
    """Voxel centres ``(voxels, 2)`` float32 in their layer's plane (x along alpha 0), each divided by its ring's
    root-mean-square radius (1 for a ring at the axis): the positions :func:`recentre` tilts along."""
    if geometry.kind == "cells":
        xy = np.stack([geometry.cell_x, geometry.cell_y], axis=1)
    else:
        xy = np.stack([geometry.voxel_eta, geometry.voxel_phi], axis=1)
    groups, xy = energy_groups(geometry, "rings"), np.asarray(xy, dtype=np.float64)
    radius = np.sqrt(np.bincount(groups, (xy**2).sum(axis=1)) / np.bincount(groups))
    return (xy / np.where(radius > 0, radius, 1.0)[groups, None]).astype(np.float32)
