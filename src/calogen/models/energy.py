"""Residual MLP for the layer-energy vector — the energy network.

Maps a noisy standardised layer vector ``x (B, D)`` (total deposit and per-layer fractions, see
:mod:`calogen.models.preprocess`), a time ``t (B,)`` and the scaled incident energy ``c (B, 1)`` to a
vector ``(B, D)`` (a velocity or a denoiser output, depending on the objective). Each block is
``h <- h + W2 SiLU(LN(W1 SiLU(LN(h))) * (1 + s) + b)`` with ``(s, b)`` a linear function of the
(time, condition) embedding; the output layer starts at zero.

Example:
    >>> net = EnergyNet(dim=6, cond_dim=1, width=32, depth=2)
    >>> net(torch.zeros(3, 6), torch.zeros(3), torch.zeros(3, 1)).shape
    torch.Size([3, 6])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from calogen.models.layers import ConditionEmbedding

__all__ = ["EnergyNet", "ResidualBlock"]


class ResidualBlock(nn.Module):
    """``h + W2 SiLU(LN(W1 SiLU(LN(h))) * (1 + s) + b)`` with ``(s, b)`` a linear function of the embedding."""

    def __init__(self, width: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.lin1 = nn.Linear(width, width)
        self.film = nn.Linear(emb_dim, 2 * width)
        self.norm2 = nn.LayerNorm(width)
        self.lin2 = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.modulated(h, self.film(emb))

    def modulated(self, h: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        """The block with its scale-and-shift ``film (B, 2 * width)`` already computed."""
        scale, shift = film.chunk(2, dim=1)
        z = self.lin1(F.silu(self.norm1(h)))
        return h + self.lin2(F.silu(self.norm2(z) * (1 + scale) + shift))


class EnergyNet(nn.Module):
    """Conditional residual MLP ``(x (B, dim), t (B,), c (B, cond_dim)) -> (B, dim)``.

    Args:
        dim: size of the layer-energy vector.
        cond_dim: size of the condition.
        width: hidden width.
        depth: number of residual blocks.
    """

    def __init__(self, dim: int, cond_dim: int, *, width: int = 128, depth: int = 3) -> None:
        super().__init__()
        self.embed = ConditionEmbedding(cond_dim, width)
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(ResidualBlock(width, width) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        emb = self.embed(t, cond)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.norm(h)))
