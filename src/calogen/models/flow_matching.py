"""The denoiser interface and conditional flow matching.

Every network is wrapped once in a :class:`Denoiser`, which turns it into the right-hand side of a
probability-flow ODE ``dx/dt = f(x, t | c)`` integrated along ``schedule(n)`` from the prior (first
time) to the data (last time, 0), and which knows its own training loss. Samplers
(:mod:`calogen.models.samplers`) see only this interface, so flow matching and EDM diffusion
(:mod:`calogen.models.edm`) share them.

Flow matching (straight path): ``x_t = (1 - t) x_0 + t eps`` with ``eps ~ N(0, I)``, ``t in [0, 1]``; the
network predicts the velocity ``v = eps - x_0`` and the loss is ``|v_theta(x_t, t, c) - v|^2``. Sampling
integrates ``dx/dt = v_theta`` from ``t = 1`` (pure noise) to ``t = 0``. Training times are drawn
logit-normal (``t = sigmoid(n)``, ``n ~ N(0, 1)``) or uniform.

References: Lipman et al., arXiv:2210.02747; Liu et al. (rectified flow), arXiv:2209.03003;
Esser et al. (logit-normal times), arXiv:2403.03206.
"""

from __future__ import annotations

import abc

import torch
from torch import nn

__all__ = ["Denoiser", "FlowMatching"]


class Denoiser(nn.Module, abc.ABC):
    """A network wrapped as an ODE right-hand side with its training loss.

    Subclasses define :meth:`forward` (``dx/dt``), :meth:`loss`, :meth:`schedule` and :meth:`prior`.

    Args:
        net: a module ``(x (B, *), t (B,), cond (B, C)) -> (B, *)``.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``dx/dt`` at ``x (B, *)``, times ``t (B,)``, condition ``cond (B, C)``."""

    @abc.abstractmethod
    def loss(self, x0: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample training loss ``(B,)`` for data ``x0 (B, D)``; noise and times from ``generator``."""

    @abc.abstractmethod
    def schedule(self, n_steps: int) -> torch.Tensor:
        """Times ``(n_steps + 1,)`` from the prior to the data (ending at 0)."""

    @abc.abstractmethod
    def prior(self, noise: torch.Tensor) -> torch.Tensor:
        """The starting point for standard-normal ``noise``."""


class FlowMatching(Denoiser):
    """Conditional flow matching on the straight path (see the module docstring).

    Args:
        net: velocity network ``(x, t, cond) -> v``.
        time_sampling: ``logit-normal`` or ``uniform``.
    """

    def __init__(self, net: nn.Module, *, time_sampling: str = "logit-normal") -> None:
        super().__init__(net)
        if time_sampling not in ("logit-normal", "uniform"):
            raise ValueError(f"time_sampling must be 'logit-normal' or 'uniform', got {time_sampling!r}")
        self.time_sampling = time_sampling

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.net(x, t, cond)

    def loss(self, x0: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        n = torch.randn(x0.shape[0], generator=generator, device=x0.device, dtype=x0.dtype)
        t = torch.sigmoid(n) if self.time_sampling == "logit-normal" else torch.special.ndtr(n)
        tb = t.reshape(-1, *([1] * (x0.ndim - 1)))
        xt = (1 - tb) * x0 + tb * eps
        return (self.net(xt, t, cond) - (eps - x0)).square().flatten(1).mean(1)

    def schedule(self, n_steps: int) -> torch.Tensor:
        return torch.linspace(1.0, 0.0, n_steps + 1)

    def prior(self, noise: torch.Tensor) -> torch.Tensor:
        return noise
