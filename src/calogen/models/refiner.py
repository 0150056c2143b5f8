"""The hybrid refiner: a conditional flow from a FastSim shower to a full-simulation shower.

The refiner keeps calogen's exact-rescaling pipeline (the energy and radial networks generate the layer
and ring energies, the voxels are rescaled to them) and changes only where the shape flow starts: at the
preprocessed FastSim shower ``s`` of the same incident energy instead of Gaussian noise.

Path (a bridge): ``x_1 = s + sigma eps``, ``x_0`` the preprocessed full-simulation voxels,
``x_t = (1 - t) x_0 + t x_1``; the network predicts ``v = x_1 - x_0`` and the loss is
``|v_theta(x_t, t, c) - v|^2`` with ``c`` the shape network's condition (scaled incident energy and the
target's layer vector). Sampling integrates ``dx/dt = v_theta`` from ``t = 1`` (the FastSim shower) to
``t = 0`` with any sampler of :mod:`calogen.models.samplers`. Training pairs are unpaired showers of the
two simulations coupled within incident-energy bins (:class:`~calogen.train.data.SourcePool`), either
independently or by minibatch optimal transport (:func:`ot_assignment`).

References: Liu et al., "I2SB: Image-to-Image Schrödinger Bridge", arXiv:2302.05872; Albergo & Vanden-Eijnden
(stochastic interpolants), arXiv:2303.08797; Tong et al. (minibatch OT flow matching), arXiv:2302.00482.

Example:
    >>> net = lambda x, t, c: torch.zeros_like(x)
    >>> bridge = Bridge(net, sigma=0.0)
    >>> bridge.start(torch.ones(2, 3), torch.randn(2, 3)).sum().item()
    6.0
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from calogen.errors import CalogenError
from calogen.models.config import ModelConfig
from calogen.models.flow_matching import FlowMatching

__all__ = ["REFINER_FIELDS", "Bridge", "RefinerPipeline", "ot_assignment", "refiner_config"]

REFINER_FIELDS = ("objective", "sampler", "nfe", "bridge_sigma", "time_sampling")
"""Model settings a refiner started from a flow-matching model takes from its preset; the rest are the model's."""


class Bridge(FlowMatching):
    """Flow matching from a FastSim shower to a full-simulation shower (see the module docstring).

    Args:
        net: velocity network ``(x (B, D), t (B,), cond (B, C)) -> (B, D)``.
        time_sampling: ``logit-normal`` or ``uniform`` training times.
        sigma: standard deviation of the noise added to the FastSim start.
    """

    def __init__(self, net: nn.Module, *, time_sampling: str = "logit-normal", sigma: float = 0.0) -> None:
        super().__init__(net, time_sampling=time_sampling)
        self.sigma = float(sigma)

    def start(self, source: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The starting point ``source + sigma noise`` for preprocessed FastSim voxels ``source (B, D)``."""
        return source + self.sigma * noise if self.sigma else source

    def loss(
        self, x0: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None, source: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-sample loss ``(B,)`` for full-simulation ``x0 (B, D)`` paired with FastSim ``source (B, D)``."""
        if source is None:
            raise ValueError("a refiner's loss needs the paired FastSim showers (source)")
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        n = torch.randn(x0.shape[0], generator=generator, device=x0.device, dtype=x0.dtype)
        t = torch.sigmoid(n) if self.time_sampling == "logit-normal" else torch.special.ndtr(n)
        tb = t.reshape(-1, *([1] * (x0.ndim - 1)))
        x1 = self.start(source, eps)
        xt = (1 - tb) * x0 + tb * x1
        return (self.net(xt, t, cond) - (x1 - x0)).square().flatten(1).mean(1)

    def prior(self, noise: torch.Tensor) -> torch.Tensor:
        raise CalogenError(
            "a refiner starts from FastSim showers, not from noise: use `calogen refine MODEL --fastsim FAST.h5`, "
            "or calogen.load(MODEL), which returns a HybridGenerator that runs the FastSim itself"
        )


class RefinerPipeline(nn.Module):
    """A refiner's whole generator with explicit inputs, the graph ``calogen export`` writes.

    ``forward(energies (B, 1) MeV, fastsim (B, voxels) MeV, noise_energy, noise_shape) -> (B, voxels) MeV``,
    float32, no randomness inside: the energy and radial networks generate the layer and ring energies, the
    shape flow starts at the FastSim showers (perturbed by ``noise_shape``), the voxels are rescaled exactly.
    The FastSim that produced ``fastsim`` is not part of it.

    Args:
        pipeline: the refiner model's :class:`~calogen.models.pipeline.Pipeline`.
    """

    def __init__(self, pipeline: nn.Module) -> None:
        super().__init__()
        self.pipeline = pipeline

    def forward(self, energies: torch.Tensor, fastsim: torch.Tensor, noise_energy: torch.Tensor, noise_shape: torch.Tensor) -> torch.Tensor:
        stages = self.pipeline.stages(energies, noise_energy, noise_shape, fastsim)
        return self.pipeline.finish(*stages, energies, noise_energy)  # type: ignore[no-any-return]


def refiner_config(preset_model: ModelConfig, base: ModelConfig) -> ModelConfig:
    """The configuration of a refiner started from the flow-matching model configured by ``base``: its
    architecture, and :data:`REFINER_FIELDS` from ``preset_model``.

    Raises:
        CalogenError: ``preset_model`` is not a refiner or ``base`` not a flow-matching model.
    """
    if preset_model.objective != "refiner":
        raise CalogenError(f"--source needs a refiner preset (model.objective: refiner, e.g. hybrid-small), got {preset_model.objective!r}")
    if base.objective != "flow":
        raise CalogenError(f"a refiner starts from a flow-matching model; --teacher is a {base.objective!r} model")
    return dataclasses.replace(base, **{name: getattr(preset_model, name) for name in REFINER_FIELDS})


def ot_assignment(targets: torch.Tensor, candidates: torch.Tensor, allowed: np.ndarray) -> np.ndarray:
    """Minibatch optimal transport: the candidate row given to each target, distinct, minimising the total
    squared distance over allowed pairs.

    Args:
        targets: ``(B, D)`` preprocessed full-simulation voxels.
        candidates: ``(M, D)`` preprocessed FastSim voxels, ``M >= B``.
        allowed: ``(B, M)`` bool, pairs that may be matched (same incident-energy bin); every target needs
            at least one allowed candidate of its own.

    Returns:
        ``(B,)`` int64 candidate indices.
    """
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(targets.double(), candidates.double()).square().numpy()
    cost = np.where(allowed, cost, cost.max() * 10 + 1e6)
    rows, cols = linear_sum_assignment(cost)
    out = np.empty(targets.shape[0], dtype=np.int64)
    out[rows] = cols
    return out
