"""Small building blocks shared by the networks: time embedding, group norm, scale-and-shift MLP."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ConditionEmbedding", "group_norm"]


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups that divide ``channels``."""
    return nn.GroupNorm(math.gcd(channels, 8), channels)


class ConditionEmbedding(nn.Module):
    """Embeds a time ``t (B,)`` and a condition vector ``c (B, C)`` into one vector ``(B, dim)``.

    The time enters through Fourier features ``[cos(2 pi f_k t), sin(2 pi f_k t)]`` with ``f_k``
    log-spaced from 1/2 to ``max_frequency``; both then pass an MLP with SiLU activations.

    Args:
        cond_dim: ``C``, size of the condition vector.
        dim: output size.
        n_frequencies: number of Fourier frequencies.
        max_frequency: highest frequency (for inputs of order one).
    """

    def __init__(self, cond_dim: int, dim: int, *, n_frequencies: int = 16, max_frequency: float = 64.0) -> None:
        super().__init__()
        freqs = 2 * math.pi * torch.logspace(math.log10(0.5), math.log10(max_frequency), n_frequencies, device="cpu")
        self.register_buffer("freqs", freqs, persistent=False)  # computed on the CPU even when built on the meta device
        self.mlp = nn.Sequential(nn.Linear(2 * n_frequencies + cond_dim, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU())

    def forward(self, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        angles = t.reshape(-1, 1).to(cond.dtype) * self.freqs.to(cond.dtype)
        return self.mlp(torch.cat([torch.cos(angles), torch.sin(angles), cond], dim=1))
