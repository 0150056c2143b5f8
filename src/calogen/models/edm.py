"""EDM-preconditioned denoising diffusion behind the :class:`~calogen.models.flow_matching.Denoiser` interface.

The data are noised as ``x = x_0 + sigma eps``; the network ``F`` enters the denoiser
``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)`` with ``c_skip = s^2 / (sigma^2 + s^2)``,
``c_out = sigma s / sqrt(sigma^2 + s^2)``, ``c_in = 1 / sqrt(sigma^2 + s^2)``, ``c_noise = ln(sigma) / 4``
and ``s = sigma_data``. Training draws ``ln sigma ~ N(P_mean, P_std^2)`` and minimises
``lambda(sigma) |D - x_0|^2`` with ``lambda = (sigma^2 + s^2) / (sigma s)^2``. Sampling integrates the
probability-flow ODE ``dx/dsigma = (x - D(x, sigma)) / sigma`` along the Karras schedule
``sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``, then 0.

Reference: Karras et al., "Elucidating the design space of diffusion-based generative models",
arXiv:2206.00364 (Table 1, Algorithm 1).
"""

from __future__ import annotations

import torch
from torch import nn

from calogen.models.flow_matching import Denoiser

__all__ = ["EDM"]


class EDM(Denoiser):
    """EDM preconditioning (see the module docstring); time is ``sigma``.

    Args:
        net: raw network ``F(x, c_noise, cond)``.
        sigma_data, sigma_min, sigma_max, rho, p_mean, p_std: the EDM constants.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        sigma_data: float = 1.0,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
        p_mean: float = -1.2,
        p_std: float = 1.2,
    ) -> None:
        super().__init__(net)
        self.sigma_data, self.sigma_min, self.sigma_max, self.rho = sigma_data, sigma_min, sigma_max, rho
        self.p_mean, self.p_std = p_mean, p_std

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``D(x, sigma)``, the estimate of ``x_0``; ``sigma (B,)``."""
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        sd2 = self.sigma_data**2
        c_skip = sd2 / (s**2 + sd2)
        c_out = s * self.sigma_data / (s**2 + sd2).sqrt()
        c_in = 1 / (s**2 + sd2).sqrt()
        return c_skip * x + c_out * self.net(c_in * x, sigma.log() / 4, cond)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        sigma = t.clamp_min(self.sigma_min)
        return (x - self.denoise(x, sigma, cond)) / sigma.reshape(-1, *([1] * (x.ndim - 1)))

    def loss(self, x0: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        n = torch.randn(x0.shape[0], generator=generator, device=x0.device, dtype=x0.dtype)
        sigma = (self.p_mean + self.p_std * n).exp()
        s = sigma.reshape(-1, *([1] * (x0.ndim - 1)))
        weight = (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
        return weight * (self.denoise(x0 + s * eps, sigma, cond) - x0).square().flatten(1).mean(1)

    def schedule(self, n_steps: int) -> torch.Tensor:
        if n_steps == 1:
            return torch.tensor([self.sigma_max, 0.0])
        ramp = torch.linspace(0, 1, n_steps, dtype=torch.float64)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        sigmas = (hi + ramp * (lo - hi)) ** self.rho
        return torch.cat([sigmas, sigmas.new_zeros(1)]).float()

    def prior(self, noise: torch.Tensor) -> torch.Tensor:
        return noise * self.sigma_max
