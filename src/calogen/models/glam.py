"""Geometry latent mapping (GLaM): linear maps between a readout's own cells and a regular grid.

A regular geometry (every layer the same r edges and alpha count) is simply reshaped to
``(layer, alpha, r)``. An irregular one (dataset 1: different r edges and alpha counts per layer,
single-alpha layers, empty layers) is mapped per non-empty layer ``l`` by a learned encoder
``W_l (A R, n_l)`` onto a grid of ``A`` = the largest alpha count and ``R`` = the union of all radial
edges, and back by a learned decoder ``V_l (n_l, A R)``. The encoder is initialised with the area
overlap of annular sectors,

    W_l[g, c] = |sector_g ∩ sector_c| / |sector_c|,   |[r0, r1] x [a0, a1]| = (r1^2 - r0^2) (a1 - a0) / 2,

so every column sums to 1 (a cell's content is shared out, single-alpha layers evenly over alpha), and
the decoder with its pseudo-inverse, so decode(encode(x)) = x at initialisation. Both are trained with
the network; the loss stays in the original cells.

Reference: Amram & Pedro, "Denoising diffusion models with geometry adaptation for high fidelity
calorimeter simulation", arXiv:2308.03876 (GLaM).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from calogen.geometry import Geometry, Layer

__all__ = ["GridMap", "overlap_matrix"]


def _interval_overlap(lo_a: np.ndarray, hi_a: np.ndarray, lo_b: np.ndarray, hi_b: np.ndarray) -> np.ndarray:
    """Pairwise overlap lengths ``(len(a), len(b))`` of intervals ``[lo, hi]``."""
    return np.clip(np.minimum(hi_a[:, None], hi_b[None, :]) - np.maximum(lo_a[:, None], lo_b[None, :]), 0, None)


def overlap_matrix(layer: Layer, r_edges: np.ndarray, n_alpha: int) -> np.ndarray:
    """Area-overlap encoder ``(n_alpha * (len(r_edges) - 1), layer.n_voxels)`` (see module docstring).

    Args:
        layer: the readout layer whose cells are the columns.
        r_edges: radial edges of the grid in mm; must cover the layer's edges.
        n_alpha: alpha bins of the grid.
    """
    le = np.asarray(layer.r_edges, dtype=np.float64)
    ge = np.asarray(r_edges, dtype=np.float64)
    r_area = _interval_overlap(ge[:-1] ** 2, ge[1:] ** 2, le[:-1] ** 2, le[1:] ** 2) / (le[1:] ** 2 - le[:-1] ** 2)
    la = np.linspace(-math.pi, math.pi, layer.n_alpha + 1)
    ga = np.linspace(-math.pi, math.pi, n_alpha + 1)
    a_frac = _interval_overlap(ga[:-1], ga[1:], la[:-1], la[1:]) / (2 * math.pi / layer.n_alpha)
    # grid index a*R + r, cell index alpha*n_r + r_cell
    return np.einsum("ab,rc->arbc", a_frac, r_area).reshape(n_alpha * (ge.size - 1), layer.n_voxels)


class GridMap(nn.Module):
    """Maps flat showers ``(B, voxels)`` to a regular grid ``(B, 1, L, A, R)`` and back.

    Args:
        geometry: the readout.
        learned: for an irregular geometry, train the encoder and decoder (else keep them fixed).

    Attributes:
        grid_shape: ``(L, A, R)``; ``L`` counts the non-empty layers.
        layer_position: ``(L,)`` layer indices of the grid layers, scaled to [-1, 1].
    """

    def __init__(self, geometry: Geometry, *, learned: bool = True) -> None:
        super().__init__()
        self.regular = geometry.is_regular
        layers = [geometry.layers[i] for i in geometry.nonempty_layers]
        n_alpha = max(layer.n_alpha for layer in layers)
        r_edges = np.unique(np.concatenate([np.asarray(layer.r_edges) for layer in layers]))
        self.grid_shape = (len(layers), n_alpha, r_edges.size - 1)
        index = np.asarray(geometry.nonempty_layers, dtype=np.float64)
        self.layer_position = tuple(np.interp(index, [0, max(geometry.n_layers - 1, 1)], [-1.0, 1.0]).tolist())
        self.sizes = [layer.n_voxels for layer in layers]
        self.encoders = nn.ParameterList()
        self.decoders = nn.ParameterList()
        if self.regular:
            return
        for layer in layers:
            enc = overlap_matrix(layer, r_edges, n_alpha)
            self.encoders.append(nn.Parameter(torch.tensor(enc, dtype=torch.float32), requires_grad=learned))
            self.decoders.append(nn.Parameter(torch.tensor(np.linalg.pinv(enc), dtype=torch.float32), requires_grad=learned))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Grid ``(B, 1, L, A, R)`` from flat cells ``(B, voxels)``."""
        if self.regular:
            return x.reshape(x.shape[0], 1, *self.grid_shape)
        parts = torch.split(x, self.sizes, dim=1)
        grid = torch.stack([p @ w.T for p, w in zip(parts, self.encoders, strict=True)], dim=1)
        return grid.reshape(x.shape[0], 1, *self.grid_shape)

    def decode(self, grid: torch.Tensor) -> torch.Tensor:
        """Flat cells ``(B, voxels)`` from a grid ``(B, 1, L, A, R)``."""
        flat = grid.reshape(grid.shape[0], self.grid_shape[0], -1)
        if self.regular:
            return flat.reshape(grid.shape[0], -1)
        return torch.cat([flat[:, i] @ w.T for i, w in enumerate(self.decoders)], dim=1)
