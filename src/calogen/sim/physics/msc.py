"""Multiple Coulomb scattering of leptons per condensed-history step: angle, path length, displacement.

Width (Highland; Lynch & Dahl, NIM B 58 (1991) 6; PDG "Passage of particles through matter") for a true
path s (mm) in a medium of radiation length X0, with the log term clamped at c (default 0.05) so that
short steps are not under-scattered:

    theta0 = 13.6 MeV / (beta c p) sqrt(s/X0) [1 + 0.038 ln(max(s/X0, c))]

The step's scattering strength is tau = theta0^2 = s / lambda1 (lambda1: transport mean free path), since
<cos theta> = exp(-tau) ~ 1 - theta0^2 for small angles. From it:

- path-length correction: mean advance along the initial direction g = lambda1 (1 - exp(-tau)), and its
  inverse s = -lambda1 ln(1 - g/lambda1) for a distance to a plane (the Urban model's transformation,
  Geant4 physics reference manual, "Multiple scattering");
- deflection: cos theta from a von Mises-Fisher law p(mu) ~ exp(a mu) with mean exp(-tau), a from Cohen's
  inverse-Langevin approximation a = y (3 - y^2) / (1 - y^2), y = exp(-tau) (a Gaussian of width theta0
  for small tau, isotropic for large tau);
- lateral displacement: Gaussian in the two planes perpendicular to the initial direction with total
  variance <r^2> - g^2 = lambda1^2 [2 tau - 3 + 4 exp(-tau) - exp(-2 tau)], the exact second moment of a
  persistent random walk (PDG's s^2 theta0^2 / 3 per plane for small tau); it is not correlated with the
  deflection.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from calogen.sim.physics.constants import ELECTRON_MASS
from calogen.sim.physics.rng import normal_pair, random_azimuth, uniform_open

__all__ = [
    "geometric_length",
    "highland_momentum_factor",
    "highland_path_factor",
    "highland_theta0",
    "lateral_variance",
    "scatter",
    "transport_mean_free_path",
    "true_length",
]

_NEGLIGIBLE_TAIL = 25.0
"""Above this concentration a of the von Mises-Fisher law, exp(-2a) < 2e-22 is dropped from the sampling of
cos theta: with u >= 2^-53 it moves cos theta by less than 1e-7."""


@nb.njit(cache=True, nogil=True)
def highland_path_factor(step: float, radiation_length: float, log_clamp: float) -> float:
    """The path-length part of the Highland formula, sqrt(s/X0) [1 + 0.038 ln(max(s/X0, c))] (0 for s <= 0)."""
    t = step / radiation_length
    if t <= 0.0:
        return 0.0
    return math.sqrt(t) * (1.0 + 0.038 * math.log(max(t, log_clamp)))


@nb.njit(cache=True, nogil=True)
def highland_momentum_factor(kinetic: float) -> float:
    """The momentum part of the Highland formula, 13.6 MeV / (beta c p), for a lepton of ``kinetic`` MeV."""
    total = kinetic + ELECTRON_MASS
    return 13.6 * total / (kinetic * (kinetic + 2.0 * ELECTRON_MASS))  # beta c p = p^2 c^2 / E


@nb.njit(cache=True, nogil=True)
def highland_theta0(kinetic: float, step: float, radiation_length: float, log_clamp: float) -> float:
    """Highland width theta0 (rad) for a lepton of ``kinetic`` MeV after a true path ``step`` mm."""
    return highland_momentum_factor(kinetic) * highland_path_factor(step, radiation_length, log_clamp)


@nb.njit(cache=True, nogil=True)
def transport_mean_free_path(theta0: float, step: float) -> float:
    """lambda1 = s / theta0^2 (mm); inf when there is no scattering."""
    return step / (theta0 * theta0) if theta0 > 0.0 else math.inf


@nb.njit(cache=True, nogil=True)
def geometric_length(step: float, lambda1: float) -> float:
    """Mean advance (mm) along the initial direction after a true path ``step``: lambda1 (1 - exp(-s/lambda1))."""
    if lambda1 == math.inf:
        return step
    return -lambda1 * math.expm1(-step / lambda1)


@nb.njit(cache=True, nogil=True)
def true_length(geometric: float, lambda1: float) -> float:
    """True path (mm) whose mean advance is ``geometric``; inf if out of reach (advance >= lambda1)."""
    if lambda1 == math.inf:
        return geometric
    if geometric >= lambda1:
        return math.inf
    return -lambda1 * math.log1p(-geometric / lambda1)


@nb.njit(cache=True, nogil=True)
def _variance_ratio(tau: float, e: float) -> float:
    """lambda1^2 [2 tau - 3 + 4 e - e^2] / step^2 with e = exp(-tau) (its series for small tau)."""
    if tau < 1e-3:
        return tau * (2.0 / 3.0 - tau * (0.5 - tau * 7.0 / 30.0))
    return (2.0 * tau - 3.0 + 4.0 * e - e * e) / (tau * tau)


@nb.njit(cache=True, nogil=True)
def lateral_variance(step: float, tau: float) -> float:
    """Variance (mm^2) of the end point around its mean after a true path ``step`` of strength ``tau``."""
    return step * step * _variance_ratio(tau, math.exp(-tau))


@nb.njit(cache=True, nogil=True)
def scatter(
    ux: float, uy: float, uz: float, theta0: float, step: float, state: np.ndarray
) -> tuple[float, float, float, float, float, float]:
    """(dx, dy, dz, ux', uy', uz'): lateral displacement (mm, perpendicular to u) and deflected direction
    after a true path ``step`` mm with Highland width ``theta0``."""
    if theta0 <= 0.0:
        return 0.0, 0.0, 0.0, ux, uy, uz
    tau = theta0 * theta0
    y = math.exp(-tau)
    a = y * (3.0 - y * y) / (1.0 - y * y) if tau > 1e-12 else 1.0 / tau
    u = uniform_open(state)
    if a < _NEGLIGIBLE_TAIL:
        u += (1.0 - u) * math.exp(-2.0 * a)
    mu = max(1.0 + math.log(u) / a, -1.0)
    sin_t = math.sqrt(max(0.0, 1.0 - mu * mu))
    cos_phi, sin_phi = random_azimuth(state)
    # two unit vectors e1, e2 perpendicular to u
    if abs(uz) < 0.9:
        n = 1.0 / math.sqrt(ux * ux + uy * uy)
        e1x, e1y, e1z = uy * n, -ux * n, 0.0
    else:
        n = 1.0 / math.sqrt(uy * uy + uz * uz)
        e1x, e1y, e1z = 0.0, uz * n, -uy * n
    e2x = uy * e1z - uz * e1y
    e2y = uz * e1x - ux * e1z
    e2z = ux * e1y - uy * e1x
    c, s = sin_t * cos_phi, sin_t * sin_phi
    nx = ux * mu + c * e1x + s * e2x
    ny = uy * mu + c * e1y + s * e2y
    nz = uz * mu + c * e1z + s * e2z
    norm = 1.0 / math.sqrt(nx * nx + ny * ny + nz * nz)
    z1, z2 = normal_pair(state)
    width = step * math.sqrt(0.5 * _variance_ratio(tau, y))
    a1, a2 = width * z1, width * z2
    return a1 * e1x + a2 * e2x, a1 * e1y + a2 * e2y, a1 * e1z + a2 * e2z, nx * norm, ny * norm, nz * norm
