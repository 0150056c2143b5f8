"""The classifier networks: a LeakyReLU MLP or a 3-D CNN over ``(layer, alpha, r)``, behind an optional
standardisation layer, with seeded initialisation and dropout."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from calogen.eval.classifier_inputs import gather
from calogen.eval.classifier_settings import ClassifierSettings
from calogen.generator import derive_seed
from calogen.geometry import Geometry

__all__ = ["MIN_SCALE", "build_model", "feature_stats"]


class _Dropout(nn.Module):
    """Dropout drawing its mask from an explicit generator (no global random state)."""

    def __init__(self, p: float, generator: torch.Generator) -> None:
        super().__init__()
        self.p, self.generator = p, generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep / (1.0 - self.p)


class _Standardize(nn.Module):
    """``(x - mean) / scale`` with fixed per-feature buffers."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("scale", scale.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


MIN_SCALE = 1e-30
"""Smallest per-feature deviation used for standardisation: a smaller one would overflow float32 inputs."""


def feature_stats(
    ref: torch.Tensor, gen: torch.Tensor, rows: np.ndarray, s: ClassifierSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation of ``rows`` (two passes, float64); deviations too small to
    divide by in float32 (below :data:`MIN_SCALE`, e.g. columns of denormal cell energies) become 1."""
    chunks = range(0, len(rows), s.batch_size)
    total = sum(gather(ref, gen, rows[i : i + s.batch_size])[0].double().sum(0) for i in chunks)
    mean = total / len(rows)
    squares = sum(((gather(ref, gen, rows[i : i + s.batch_size])[0].double() - mean) ** 2).sum(0) for i in chunks)
    std = torch.sqrt(squares / len(rows))
    return mean, torch.where(std > MIN_SCALE, std, torch.ones_like(std))


def _mlp(n_in: int, hidden: tuple[int, ...], dropout: float, generator: torch.Generator) -> nn.Sequential:
    """``(Linear, LeakyReLU, Dropout)`` per hidden width, then a linear layer to one logit."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), nn.LeakyReLU(), _Dropout(dropout, generator)]
        n_in = width
    return nn.Sequential(*layers, nn.Linear(n_in, 1))


def _wrap_alpha(v: torch.Tensor) -> torch.Tensor:
    """Pad ``(N, C, layer, alpha, r)`` by one alpha bin on each side, circularly."""
    return torch.cat([v[:, :, :, -1:], v, v[:, :, :, :1]], dim=3).contiguous(memory_format=torch.channels_last_3d)


class _ShowerCNN(nn.Module):
    """Two stride-2 3x3x3 convolutions (circular in alpha, zero-padded in layer and r), then an MLP
    on the flattened maps and log10 E. Input: low-level rows ``(N, 1 + layers * alpha * r)``."""

    def __init__(
        self, shape: tuple[int, int, int], settings: ClassifierSettings, generator: torch.Generator
    ) -> None:
        super().__init__()
        c1, c2 = settings.cnn_channels
        self.shape = shape
        self.conv1 = nn.Conv3d(1, c1, 3, stride=2, padding=(1, 0, 1))
        self.conv2 = nn.Conv3d(c1, c2, 3, stride=2, padding=(1, 0, 1))
        out = shape
        for _ in range(2):
            out = tuple((n - 1) // 2 + 1 for n in out)  # type: ignore[assignment]
        self.head = _mlp(c2 * math.prod(out) + 1, (settings.cnn_hidden,), settings.dropout, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 1:].reshape(-1, 1, *self.shape)
        v = F.leaky_relu(self.conv1(_wrap_alpha(v)))
        v = F.leaky_relu(self.conv2(_wrap_alpha(v)))
        return self.head(torch.cat([v.flatten(1), x[:, :1]], dim=1))


def build_model(
    kind: str,
    n_features: int,
    settings: ClassifierSettings,
    geometry: Geometry | None,
    seed: int,
    stats: tuple[torch.Tensor, torch.Tensor] | None,
) -> nn.Module:
    """The network for ``kind``, initialised (PyTorch's default scheme) from generators seeded by
    ``seed``, behind a standardisation layer when ``stats`` (mean, scale) are given."""
    dropout_gen = torch.Generator(device=settings.device).manual_seed(derive_seed(seed, 1))
    if kind == "cnn":
        assert geometry is not None  # checked in check_inputs
        model: nn.Module = _ShowerCNN(geometry.shape, settings, dropout_gen)
    else:
        model = _mlp(n_features, settings.hidden, settings.dropout, dropout_gen)
    init_gen = torch.Generator().manual_seed(derive_seed(seed, 2))
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv3d):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=init_gen)
            bound = 1.0 / math.sqrt(module.weight[0].numel())
            nn.init.uniform_(module.bias, -bound, bound, generator=init_gen)
    if stats is not None:
        model = nn.Sequential(_Standardize(*stats), model)
    model = model.to(settings.device)
    if kind == "cnn":
        model = model.to(memory_format=torch.channels_last_3d)
    return model
