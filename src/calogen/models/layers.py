"""Small building blocks shared by the networks: time embedding, group norm, weight-only terms kept while sampling."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["ConditionEmbedding", "ConstantCache", "group_norm"]


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
        angles = t.reshape(-1, 1).to(cond.dtype) * self.freqs
        return self.mlp(torch.cat([torch.cos(angles), torch.sin(angles), cond], dim=1))


class ConstantCache:
    """A tensor computed from weights alone (no input), reused between calls in inference mode.

    :meth:`get` returns ``compute()`` and, in ``torch.inference_mode`` (where sampling runs), keeps it until
    one of the tensors it was computed from changes: their version counters (in-place updates: EMA,
    ``load_state_dict``), storage, dtype and device. Elsewhere (training, ``no_grad`` validation: a fused
    optimiser step does not count versions), with autocast on, while tracing (ONNX export) or for inference
    tensors (no version counter) it computes every time. A kept tensor holds the same bytes as a recomputed one.
    Writes that bypass version counting (``p.data.copy_(...)``, fused optimiser steps) are not seen: change
    the weights of a model that is sampling in place under ``torch.no_grad()`` (as EMA does) or load them anew.
    """

    def __init__(self) -> None:
        self._entry: tuple[tuple[object, ...], torch.Tensor] | None = None  # one attribute: replaced atomically

    def get(self, compute: Callable[[], torch.Tensor], *sources: torch.Tensor) -> torch.Tensor:
        """``compute()``, reused while ``sources`` (everything it reads) are unchanged."""
        if (
            not torch.is_inference_mode_enabled() or torch.jit.is_tracing() or torch.is_autocast_enabled(sources[0].device.type)
            or any(t.is_inference() for t in sources)
        ):  # fmt: skip
            return compute()
        key = tuple((t._version, t.data_ptr(), t.dtype, t.device) for t in sources)
        entry = self._entry
        if entry is None or entry[0] != key:
            entry = self._entry = (key, compute())
        return entry[1]
