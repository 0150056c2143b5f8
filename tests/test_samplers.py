"""Samplers: every solver converges on a Gaussian toy with an exact velocity field, with exact NFE counts."""

from __future__ import annotations

import math

import pytest
import torch

from calogen.errors import CalogenError
from calogen.models.edm import EDM
from calogen.models.flow_matching import FlowMatching
from calogen.models.samplers import SAMPLERS, solve, steps_for_nfe

MU, S = 2.0, 0.5  # data ~ N(MU, S^2) in every dimension
ODE_SAMPLERS = sorted(set(SAMPLERS) - {"jump"})  # jump needs an average velocity, not dx/dt


def flow_velocity(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    """Exact E[eps - x0 | x_t] for x_t = (1 - t) x0 + t eps."""
    t = t[:, None]
    var = (1 - t) ** 2 * S**2 + t**2
    centred = x - (1 - t) * MU
    return t / var * centred - (MU + (1 - t) * S**2 / var * centred)


def edm_derivative(x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    """Exact (x - D(x, sigma)) / sigma with D = E[x0 | x0 + sigma eps]; sigma clamped like :class:`EDM`."""
    s = sigma[:, None].clamp_min(0.002)
    return (x - (MU + S**2 / (S**2 + s**2) * (x - MU))) / s


def _flow_error(sampler: str, nfe: int) -> float:
    noise = torch.randn(256, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fm = FlowMatching(torch.nn.Identity())
    schedule = fm.schedule(steps_for_nfe(sampler, nfe)[0]).double()
    x = solve(flow_velocity, fm.prior(noise), schedule, sampler=sampler, nfe=nfe, cond=None)
    return float((x - (MU + S * noise)).abs().max())


@pytest.mark.parametrize("sampler", ODE_SAMPLERS)
def test_flow_matching_converges(sampler):
    errors = [_flow_error(sampler, nfe) for nfe in (4, 8, 32)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < (0.1 if sampler == "euler" else 5e-3)


@pytest.mark.parametrize("sampler", ODE_SAMPLERS)
def test_edm_converges(sampler):
    edm = EDM(torch.nn.Identity(), sigma_max=20.0)
    noise = torch.randn(256, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = MU + S * (edm.sigma_max * noise - MU) / math.sqrt(S**2 + edm.sigma_max**2)  # the ODE keeps (x - mu) / sqrt(S^2 + sigma^2)
    errors = []
    for nfe in (8, 16, 64):
        schedule = edm.schedule(steps_for_nfe(sampler, nfe)[0]).double()
        x = solve(edm_derivative, edm.prior(noise), schedule, sampler=sampler, nfe=nfe, cond=None)
        errors.append(float((x - exact).abs().max()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < (0.1 if sampler == "euler" else 2e-2)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("nfe", [1, 2, 5])
def test_exact_nfe(sampler, nfe):
    calls = []

    def counting(x, t, cond, *interval_end):
        calls.append(float(t[0]))
        return -x

    steps = steps_for_nfe(sampler, nfe)[0]
    solve(counting, torch.ones(2, 3), torch.linspace(1, 0, steps + 1), sampler=sampler, nfe=nfe, cond=None)
    assert len(calls) == nfe


def average_velocity(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None, r: torch.Tensor) -> torch.Tensor:
    """Exact (x_t - x_r) / (t - r) along the toy's flow, which keeps (x - (1 - t) MU) / sqrt((1 - t)^2 S^2 + t^2)."""
    t, r = t[:, None], r[:, None]
    z = (x - (1 - t) * MU) / ((1 - t) ** 2 * S**2 + t**2).sqrt()
    return (x - ((1 - r) * MU + ((1 - r) ** 2 * S**2 + r**2).sqrt() * z)) / (t - r)


@pytest.mark.parametrize("nfe", [1, 2, 3])
def test_jumps_with_the_exact_average_velocity_are_exact_at_any_nfe(nfe):
    noise = torch.randn(256, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = solve(average_velocity, noise, torch.linspace(1, 0, nfe + 1, dtype=torch.float64), sampler="jump", nfe=nfe, cond=None)
    torch.testing.assert_close(x, MU + S * noise, rtol=0, atol=1e-12)


def test_bad_requests():
    with pytest.raises(CalogenError, match="unknown sampler"):
        steps_for_nfe("rk45", 4)
    with pytest.raises(CalogenError, match="nfe must be >= 1"):
        steps_for_nfe("euler", 0)
    with pytest.raises(ValueError, match="needs 3 times"):
        solve(flow_velocity, torch.ones(1, 1), torch.linspace(1, 0, 5), sampler="heun", nfe=4, cond=None)
