"""Residual MLP for the radial vector — the radial network.

Given the layer energies, it generates how each layer's energy splits over its radial bins: the
standardised radial vector ``(B, L * R)`` of :mod:`calogen.models.preprocess`, one row of ``R`` fractions
per layer. One MLP, shared by all layers, sees each layer as a row: its ``R`` noisy values and its own
standardised layer fraction, modulated (scale-and-shift in every block) by the sum of an embedding of
(time, incident energy, whole layer vector) and a learned embedding of the layer index. Sharing the
weights across layers makes the ``L * R``-dimensional problem a small one with ``L`` times the data;
the shower-level embedding carries the correlations between layers (how deep the shower started).

Voxels are then rescaled to the ring energies (layer energy times fraction) instead of the layer
energies, so the transverse profile of every layer comes from this network, not from the shape network.

Example:
    >>> net = RadialNet(n_layers=3, n_r=4, cond_dim=5, width=16, depth=1)
    >>> net(torch.zeros(2, 12), torch.zeros(2), torch.zeros(2, 5)).shape
    torch.Size([2, 12])
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from calogen.models.energy import ResidualBlock
from calogen.models.layers import ConditionEmbedding, ConstantCache

__all__ = ["RadialNet"]


class RadialNet(nn.Module):
    """Conditional residual MLP ``(x (B, L * R), t (B,), c (B, cond_dim)) -> (B, L * R)``.

    The condition is ``[scaled incident energy, direction features (if any), standardised layer vector
    (1 + L)]``; column ``first_layer + l`` is layer ``l``'s own fraction, which each row also receives as an input.

    Args:
        n_layers, n_r: ``L`` and ``R``.
        cond_dim: size of the condition (``2 + L`` without direction features).
        width: hidden width.
        depth: number of residual blocks.
        first_layer: condition column of layer 0's fraction (2, or 2 + the direction features).
    """

    def __init__(self, n_layers: int, n_r: int, cond_dim: int, *, width: int = 64, depth: int = 2, first_layer: int = 2) -> None:
        super().__init__()
        self.n_layers, self.n_r, self.first_layer = n_layers, n_r, first_layer
        self.embed = ConditionEmbedding(cond_dim, width)
        self.layer_embedding = nn.Parameter(torch.zeros(n_layers, width))
        self.inp = nn.Linear(n_r + 1, width)
        self.blocks = nn.ModuleList(ResidualBlock(width, width) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, n_r)
        self._layer_films = [ConstantCache() for _ in range(depth)]  # the layer embeddings' scale-and-shift terms
        if not self.layer_embedding.is_meta:  # on the meta device parameters are only counted (pair.parameter_count)
            nn.init.normal_(self.layer_embedding, std=0.1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b, n_l, n_r = x.shape[0], self.n_layers, self.n_r
        emb = self.embed(t, cond)
        own = cond[:, self.first_layer : self.first_layer + n_l].reshape(b * n_l, 1)
        h = self.inp(torch.cat([x.reshape(b * n_l, n_r), own], dim=1))
        for block, cache in zip(self.blocks, self._layer_films, strict=True):
            # the scale-and-shift is linear in (shower embedding + layer embedding): two small products,
            # the second one a constant of the weights, kept between calls when sampling
            layer_film = cache.get(partial(F.linear, self.layer_embedding, block.film.weight), self.layer_embedding, block.film.weight)
            film = block.film(emb)[:, None, :] + layer_film
            h = block.modulated(h, film.reshape(b * n_l, -1))
        return self.out(F.silu(self.norm(h))).reshape(b, n_l * n_r)
