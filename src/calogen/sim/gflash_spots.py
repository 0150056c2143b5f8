"""GFLASH spots: a shower's profiles on depth steps, the energy spots drawn from them, and their polar scoring.

Spots are placed in depth from the spot profile (:func:`~calogen.sim.gflash_longitudinal.spot_profile`) on depth
steps of :data:`STEP_X0` (:func:`depth_steps`). A spot carries its step's share of the energy profile over its
expected spot count (an importance weight); the weights are normalised to the shower's deposited energy
(:func:`spot_weights`). Its radius follows the step's core + tail radial profile
(:mod:`calogen.sim.gflash_radial`), its azimuth is uniform (:func:`place_spots`). At normal incidence into a
cylindrical readout :func:`score_spots` adds the same spots (same random numbers) to the voxels from their polar
coordinates, never forming x and y; scoring the Cartesian spots with :func:`~calogen.sim.readout.score_points`
gives the same voxels.

Example:
    >>> from calogen.sim.gflash_params import GflashParameters
    >>> steps = depth_steps(50_000.0, 8.0, 4.0, GflashParameters.default())
    >>> bool(abs(steps.energy.sum() - 1.0) < 1e-9), steps.radial.shape[0]
    (True, 3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np

from calogen.sim.gflash_longitudinal import gamma_rate, mean_log_shape, spot_profile
from calogen.sim.gflash_params import GflashParameters
from calogen.sim.gflash_radial import (
    radial_coefficients,
    radial_shape,
    radius_scales,
    scale_radial,
)
from calogen.sim.readout import layer_row, row_voxel

__all__ = [
    "STEP_X0",
    "DepthSteps",
    "Spots",
    "depth_steps",
    "place_spots",
    "score_spots",
    "spot_weights",
]

STEP_X0 = 0.2
"""Width of the depth steps (X0) within which spots share energy and radial shape."""


@nb.njit(cache=True)
def _gamma_step_fractions(alpha: float, beta: float, n_steps: int, h: float) -> np.ndarray:
    """Fractions ``(n_steps,)`` of a Gamma(alpha, rate beta) density in steps of width h (midpoint rule, normalised)."""
    out = np.empty(n_steps)
    total = 0.0
    for j in range(n_steps):
        t = (j + 0.5) * h
        out[j] = math.exp((alpha - 1.0) * math.log(beta * t) - beta * t)
        total += out[j]
    for j in range(n_steps):
        out[j] /= total
    return out


@nb.njit(cache=True)
def _depth_profile(
    alpha: float, beta: float, alpha_s: float, beta_s: float, n_steps: int, tau_step: float, coeffs: np.ndarray,
    core_scale: float, tail_scale: float, weight_offset: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Energy and spot fractions, tau and calibrated radial parameters of :class:`DepthSteps` in one compiled call."""
    tau = (np.arange(n_steps) + 0.5) * tau_step
    radial = scale_radial(radial_shape(tau, coeffs), core_scale, tail_scale, weight_offset)
    energy = _gamma_step_fractions(alpha, beta, n_steps, STEP_X0)
    return energy, _gamma_step_fractions(alpha_s, beta_s, n_steps, STEP_X0), tau, radial


@dataclass(frozen=True)
class DepthSteps:
    """One shower's profile on steps ``[j h, (j + 1) h)`` X0 after its start (h = :data:`STEP_X0`).

    Attributes:
        energy: fraction of the deposited energy per step ``(S,)`` (sums to 1).
        spots: fraction of the spots per step ``(S,)`` (sums to 1).
        tau: every step's middle in units of T (see :func:`depth_steps`), ``(S,)``.
        radial: R_C, R_T (units of R_M) and core probability p at ``tau``, ``(3, S)``.
    """

    energy: np.ndarray
    spots: np.ndarray
    tau: np.ndarray
    radial: np.ndarray


def depth_steps(
    energy: float, t_max: float, alpha: float, params: GflashParameters, mean_alpha: float | None = None
) -> DepthSteps:
    """Energy, spot and radial profiles of a shower with depth of maximum ``t_max`` (X0) and shape ``alpha``.

    Steps extend to 10 standard deviations beyond the mean of the longer of the two Gamma profiles.
    The radial shape is taken at ``tau``, the depth in units of the shower's centre of gravity rescaled so
    that ``tau = t / T`` for a shower of mean shape: ``tau = t (beta / alpha) <alpha> / (<alpha> - 1)``,
    with beta the (tilted) rate of :func:`gamma_rate` and ``<alpha> = exp<ln alpha>`` at ``energy`` (computed
    when ``mean_alpha`` is not given).
    """
    beta = float(gamma_rate(t_max, alpha, params))
    alpha_s, beta_s = (float(v) for v in spot_profile(t_max, alpha, params))
    t_end = max((alpha + 10.0 * math.sqrt(alpha)) / beta, (alpha_s + 10.0 * math.sqrt(alpha_s)) / beta_s)
    n_steps = int(math.ceil(t_end / STEP_X0))
    if mean_alpha is None:
        mean_alpha = math.exp(float(mean_log_shape(np.array([energy]), params)[1][0]))
    tau_per_x0 = beta / alpha * mean_alpha / (mean_alpha - 1.0)
    profile = _depth_profile(
        alpha, beta, alpha_s, beta_s, n_steps, STEP_X0 * tau_per_x0, radial_coefficients(energy, params),
        *(float(v) for v in radius_scales(energy, params)), params.core_weight_offset,
    )  # fmt: skip
    return DepthSteps(*profile)


@nb.njit(cache=True)
def spot_weights(
    energy_frac: np.ndarray, spot_frac: np.ndarray, n: int, u_alloc: float, deposited: float
) -> tuple[np.ndarray, np.ndarray]:
    """Spot count ``(S,)`` and energy (MeV) of one spot ``(S,)`` in every depth step.

    Spots are allotted to steps by systematic sampling of ``spot_frac`` (offset ``u_alloc``). A spot in
    step j carries ``energy_frac[j] / (n spot_frac[j])`` (an importance weight, so the expected energy per
    step follows the energy profile even where steps get no spot), scaled so that all n spots sum to
    ``deposited``.
    """
    n_steps = spot_frac.shape[0]
    counts = np.zeros(n_steps, dtype=np.int64)
    energy = np.zeros(n_steps)
    cum = 0.0
    prev = 0
    placed = 0.0
    for j in range(n_steps):
        cum += spot_frac[j]
        upto = n if j == n_steps - 1 else min(int(math.floor(n * cum + u_alloc)), n)
        counts[j] = max(upto - prev, 0)
        prev = upto
        if counts[j] > 0:
            energy[j] = energy_frac[j] / (n * spot_frac[j])  # unbiased: E[count] = n spot_frac[j]
            placed += energy[j] * counts[j]
    scale = deposited / placed
    for j in range(n_steps):
        energy[j] *= scale
    return counts, energy


@nb.njit(cache=True, inline="always")
def _spot_radius(v: float, rc: float, rt: float, p: float) -> float:
    """Radius (units of R_M) of a spot from one uniform ``v``: core (R_C) if ``v < p``, else tail (R_T).

    The remainder ``w`` of ``v`` within its branch is uniform and gives ``r = R sqrt(w / (1 - w))``.
    """
    if v < p:
        r_unit, w = rc, v / p
    else:
        r_unit, w = rt, (v - p) / (1.0 - p)
    w = min(w, 1.0 - 1e-9)  # keeps the radius finite
    return r_unit * math.sqrt(w / (1.0 - w))


@nb.njit(cache=True)
def place_spots(
    counts: np.ndarray, energy: np.ndarray, radial: np.ndarray, u: np.ndarray, t0: float, x0: float, rm: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Positions (mm) and energies (MeV) of the spots allotted by :func:`spot_weights`.

    Spots lie uniformly within their step. ``u`` holds three uniforms per spot: core/tail choice (its
    remainder gives the radius), azimuth ``phi = 2 pi u`` and depth within the step.
    """
    n = u.shape[1]
    x = np.empty(n)
    y = np.empty(n)
    z = np.empty(n)
    e = np.empty(n)
    k = 0
    for j in range(counts.shape[0]):
        for _ in range(counts[j]):
            r = rm * _spot_radius(u[0, k], radial[0, j], radial[1, j], radial[2, j])
            phi = 2.0 * math.pi * u[1, k]
            x[k] = r * math.cos(phi)
            y[k] = r * math.sin(phi)
            z[k] = (t0 + (j + u[2, k]) * STEP_X0) * x0
            e[k] = energy[j]
            k += 1
    return x, y, z, e


@nb.njit(cache=True)
def score_spots(
    counts: np.ndarray,
    energy: np.ndarray,
    radial: np.ndarray,
    u: np.ndarray,
    t0: float,
    x0: float,
    rm: float,
    z_lo: np.ndarray,
    z_hi: np.ndarray,
    r_edges: np.ndarray,
    n_r: np.ndarray,
    n_alpha: np.ndarray,
    offsets: np.ndarray,
    out: np.ndarray,
) -> None:
    """Add the spots of :func:`place_spots` to the voxel accumulator ``out`` without forming x and y.

    The azimuth ``phi = 2 pi u`` is scored through its readout fraction ``(phi / (2 pi) + 1/2) mod 1``;
    the layer of the previous spot is tried first (spots come step by step in depth).
    """
    k = 0
    row = -1
    for j in range(counts.shape[0]):
        rc, rt, p, e = radial[0, j], radial[1, j], radial[2, j], energy[j]
        for _ in range(counts[j]):
            r = rm * _spot_radius(u[0, k], rc, rt, p)
            turn = u[1, k] + 0.5 if u[1, k] < 0.5 else u[1, k] - 0.5
            z = (t0 + (j + u[2, k]) * STEP_X0) * x0
            k += 1
            row = layer_row(z_lo, z_hi, z, row)
            if row >= 0:
                v = row_voxel(r_edges[row], n_r[row], n_alpha[row], offsets[row], r, turn)
                if v >= 0:
                    out[v] += e


@dataclass(frozen=True)
class Spots:
    """The energy spots of one shower: positions ``x, y, z`` (mm) and energies ``e`` (MeV), ``(K,)`` each.

    ``deposited`` is the shower's sampled deposited energy (MeV, CaloChallenge units), equal to ``e.sum()``;
    ``t_max`` (X0) and ``alpha`` are its longitudinal parameters and ``start`` the depth (X0) of its
    first interaction (photons only; 0 for e+-), the profile's origin before ``origin_offset``.
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    e: np.ndarray
    deposited: float
    t_max: float
    alpha: float
    start: float
