"""Learned linear maps between a cell geometry's cells and a cylindrical ``(alpha x r)`` grid per layer.

GLaM generalised to arbitrary cells (CaloDiffusion's treatment of the HGCal geometry): every layer ``l``
has an encoder ``W_l (A R, n_l)`` from its cells onto a grid of ``A`` alpha bins and ``R`` radial bins
around the layer's central cell, and a decoder ``V_l (n_l, A R)`` back. The radial edges follow the
hexagonal rings, ``r_k = (k + 1/2) p`` for ``k < R - 1`` (``p`` the largest cell width, ``R`` = largest
ring + 1), the last bin reaching every point. The encoder starts from the cell-bin overlap areas, estimated
on ``POINTS_PER_SIDE^2`` points of a regular sub-grid inside each hexagon,

    W_l[g, c] = |bin_g ∩ cell_c| / |cell_c|,

so every column sums to 1 (a cell's content is shared out over the bins it covers), and the decoder
starts as the pseudo-inverse, so ``decode(encode(x)) = x`` while the grid has at least as many bins as
the layer has cells. Both are trained with the shape network; the loss stays in the original cells.

Reference: Amram & Pedro, arXiv:2308.03876 (GLaM).

Example:
    >>> from calogen.cell_geometry import CellGeometry
    >>> m = CellGridMap(CellGeometry.builtin("tiny-hex"))
    >>> m.grid_shape
    (3, 12, 3)
    >>> x = torch.rand(2, 57)
    >>> bool(torch.allclose(m.decode(m.encode(x)), x, atol=1e-4))
    True
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from calogen.cell_geometry import SQRT3, CellGeometry, CellLayer

__all__ = ["POINTS_PER_SIDE", "CellGridMap", "cell_overlap_matrix", "grid_size", "hexagon_points"]

POINTS_PER_SIDE = 24
"""Sub-grid points per side of a hexagon's bounding box used to estimate the overlap areas."""


def grid_size(geometry: CellGeometry, n_alpha: int = 0) -> tuple[int, int]:
    """``(A, R)``: ``R`` = largest ring + 1; ``A`` = ``n_alpha``, or by default ``6 * max(1, largest ring)``
    (the cells of the outermost ring), which gives at least as many bins as cells in every layer."""
    rings = max(int(layer.ring.max()) for layer in geometry.layers)
    return (n_alpha or 6 * max(1, rings)), rings + 1


def hexagon_points(width: float, n: int = POINTS_PER_SIDE) -> np.ndarray:
    """``(k, 2)`` points of a regular ``n x n`` grid over the bounding box of a flat-top hexagon of
    flat-to-flat ``width`` centred at 0, those inside it (``|y| <= w/2`` and ``sqrt(3) |x| + |y| <= w``)."""
    half_x, half_y = width / SQRT3, width / 2.0
    xs = (np.arange(n) + 0.5) / n * 2 * half_x - half_x
    ys = (np.arange(n) + 0.5) / n * 2 * half_y - half_y
    x, y = (a.ravel() for a in np.meshgrid(xs, ys, indexing="ij"))
    inside = SQRT3 * np.abs(x) + np.abs(y) <= width
    return np.stack([x[inside], y[inside]], axis=1)


def cell_overlap_matrix(layer: CellLayer, n_alpha: int, n_r: int, pitch: float) -> np.ndarray:
    """Overlap encoder ``(n_alpha * n_r, layer.n_cells)`` (grid index ``a * n_r + r``; see the module docstring)."""
    edges = (np.arange(1, n_r) - 0.5) * pitch
    enc = np.zeros((n_alpha * n_r, layer.n_cells))
    for width in np.unique(layer.cell_width):
        cells = np.flatnonzero(layer.cell_width == width)
        local = hexagon_points(float(width))
        x = layer.x[cells, None] + local[None, :, 0]
        y = layer.y[cells, None] + local[None, :, 1]
        alpha = np.mod(np.arctan2(y, x), 2 * math.pi)
        a_bin = np.minimum((alpha / (2 * math.pi) * n_alpha).astype(np.int64), n_alpha - 1)
        rows = a_bin * n_r + np.searchsorted(edges, np.hypot(x, y))
        np.add.at(enc, (rows, np.broadcast_to(cells[:, None], rows.shape)), 1.0 / local.shape[0])
    return enc


class CellGridMap(nn.Module):
    """Maps flat cell showers ``(B, voxels)`` to a grid ``(B, 1, L, A, R)`` and back; the same interface as
    :class:`~calogen.models.glam.GridMap`.

    Args:
        geometry: the cell readout.
        n_alpha: alpha bins of the grid (0: :func:`grid_size`'s default).
        learned: train the encoders and decoders (else keep them fixed).

    Attributes:
        grid_shape: ``(L, A, R)``.
        layer_position: ``(L,)`` layer indices scaled to [-1, 1].
    """

    def __init__(self, geometry: CellGeometry, *, n_alpha: int = 0, learned: bool = True) -> None:
        super().__init__()
        n_a, n_r = grid_size(geometry, n_alpha)
        self.grid_shape = (geometry.n_layers, n_a, n_r)
        self.layer_position = tuple(np.linspace(-1.0, 1.0, geometry.n_layers).tolist() if geometry.n_layers > 1 else [-1.0])
        self.sizes = [layer.n_cells for layer in geometry.layers]
        self.encoders = nn.ParameterList()
        self.decoders = nn.ParameterList()
        if torch.empty(0).is_meta:  # counting parameters (pair.parameter_count): shapes only, no overlap estimate
            for n in self.sizes:
                self.encoders.append(nn.Parameter(torch.empty(n_a * n_r, n), requires_grad=learned))
                self.decoders.append(nn.Parameter(torch.empty(n, n_a * n_r), requires_grad=learned))
            return
        pitch = max(float(layer.cell_width.max()) for layer in geometry.layers)
        done: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}  # layers with the same cells share the initial maps
        for layer in geometry.layers:
            key = b"".join(np.ascontiguousarray(a).tobytes() for a in (layer.x, layer.y, layer.cell_width))
            if key not in done:
                enc = cell_overlap_matrix(layer, n_a, n_r, pitch)
                done[key] = torch.tensor(enc, dtype=torch.float32), torch.tensor(np.linalg.pinv(enc), dtype=torch.float32)
            enc_t, dec_t = done[key]
            self.encoders.append(nn.Parameter(enc_t.clone(), requires_grad=learned))
            self.decoders.append(nn.Parameter(dec_t.clone(), requires_grad=learned))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Grid ``(B, 1, L, A, R)`` from flat cells ``(B, voxels)``."""
        parts = torch.split(x, self.sizes, dim=1)
        grid = torch.stack([p @ w.T for p, w in zip(parts, self.encoders, strict=True)], dim=1)
        return grid.reshape(x.shape[0], 1, *self.grid_shape)

    def decode(self, grid: torch.Tensor) -> torch.Tensor:
        """Flat cells ``(B, voxels)`` from a grid ``(B, 1, L, A, R)``."""
        flat = grid.reshape(grid.shape[0], self.grid_shape[0], -1)
        return torch.cat([flat[:, i] @ w.T for i, w in enumerate(self.decoders)], dim=1)
