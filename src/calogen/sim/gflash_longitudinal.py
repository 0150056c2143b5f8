"""GFLASH longitudinal profile: per-shower depth of maximum and shape, the Gamma density, spot count and response.

The energy profile is a Gamma density in depth t (units of X0),
``dE/dt = E beta (beta t)^(alpha-1) exp(-beta t) / Gamma(alpha)`` with ``beta = (alpha - 1) / T``.
``(ln T, ln alpha)`` are correlated normals per shower; their means follow the homogeneous fits
``<T> = ln y - 0.812`` and ``<alpha> = 0.81 + (0.458 + 2.26 / Z) ln y`` (``y = E / Ec``) shifted for a
sampling calorimeter by ``-0.55 / Fs - 0.69 (1 - e_hat)`` and ``-0.476 / Fs``; their spreads are
``1 / (-2.5 + 1.25 ln y)`` and ``1 / (-0.82 + 0.79 ln y)`` with correlation ``0.784 - 0.023 ln y``.
Calibration may tilt every profile by ``exp(profile_tilt t / <t>)``, ``<t> = alpha / beta`` its centre of
gravity, which leaves a Gamma density of rate ``beta (1 - profile_tilt / alpha)``. Spots follow their own Gamma
density with ``T_s = T (0.813 + 0.0019 Z)`` and ``alpha_s = alpha (0.844 + 0.0026 Z)``; there are
``N = spot_scale * 10.3 / c * (E / GeV)^0.959`` of them (c the sampling term). The deposited energy has mean
``response(E) E``, ``response(E) = energy_scale + energy_slope ln(E / GeV)``, and the profile's origin may sit
``origin_offset + origin_slope ln(E / GeV)`` X0 upstream of the calorimeter front. Photons start after an
exponential first-conversion depth of mean :data:`PHOTON_CONVERSION_X0`.

Reference: G. Grindhammer and S. Peters, hep-ex/0001020.

Example:
    >>> from calogen.sim.gflash_params import GflashParameters
    >>> t, a = longitudinal_parameters(np.array([50_000.0]), np.zeros((1, 2)), GflashParameters.default())
    >>> bool(t[0] > 1.0 and a[0] > 1.1)
    True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from calogen.sim.gflash_params import GflashParameters

__all__ = [
    "PHOTON_CONVERSION_X0",
    "gamma_rate",
    "longitudinal_parameters",
    "mean_log_shape",
    "n_spots",
    "origin",
    "response",
    "spot_profile",
]

_GEV = 1000.0
PHOTON_CONVERSION_X0 = 9.0 / 7.0
"""Mean depth (X0) of a photon's first pair conversion."""


def _log_sigma(a: float, b: float, log_y: np.ndarray) -> np.ndarray:
    """Spread ``1 / (a + b ln y)`` of a log-normal parameter, capped at 0.5 (also where it diverges)."""
    denom = a + b * log_y
    return np.where(denom > 2.0, 1.0 / np.maximum(denom, 2.0), 0.5)


def mean_log_shape(energies: np.ndarray, params: GflashParameters) -> tuple[np.ndarray, np.ndarray]:
    """Means of ``ln T`` and ``ln alpha`` for incident energies ``(N,)`` MeV (sampling medium, offsets applied)."""
    log_y = np.log(np.asarray(energies, dtype=np.float64) / params.critical_energy_mev)
    t_hom = np.maximum(log_y - 0.812, 0.1)
    a_hom = np.maximum(0.81 + (0.458 + 2.26 / params.z_eff) * log_y, 1.1)
    log_e = np.log(np.asarray(energies, dtype=np.float64) / _GEV)
    t_shift = params.depth_offset + params.depth_slope * log_e
    t_mean = t_hom - 0.55 / params.sampling_frequency - 0.69 * (1.0 - params.e_hat) + t_shift
    a_mean = a_hom - 0.476 / params.sampling_frequency + params.shape_offset + params.shape_slope * log_e
    return np.log(np.maximum(t_mean, 0.1)), np.log(np.maximum(a_mean, 1.1))


def longitudinal_parameters(
    energies: np.ndarray, normals: np.ndarray, params: GflashParameters
) -> tuple[np.ndarray, np.ndarray]:
    """Per-shower depth of maximum T (X0) and Gamma shape alpha from two standard normals per shower.

    ``ln T = <ln T> + s_T (c1 z1 + c2 z2)``, ``ln alpha = <ln alpha> + s_a (c1 z1 - c2 z2)`` with
    ``c1, c2 = sqrt((1 +- rho) / 2)``, so ``corr(ln T, ln alpha) = rho``.

    Args:
        energies: incident energies ``(N,)`` MeV.
        normals: ``(N, 2)`` standard normal draws.
        params: the parameter set.

    Returns:
        T ``(N,)`` (>= 0.1) and alpha ``(N,)`` (>= 1.1).
    """
    energies = np.asarray(energies, dtype=np.float64)
    log_y = np.log(energies / params.critical_energy_mev)
    mean_t, mean_a = mean_log_shape(energies, params)
    sig_t = _log_sigma(-2.5, 1.25, log_y)
    sig_a = _log_sigma(-0.82, 0.79, log_y)
    rho = np.clip(0.784 - 0.023 * log_y, -1.0, 1.0)
    c1, c2 = np.sqrt((1.0 + rho) / 2.0), np.sqrt((1.0 - rho) / 2.0)
    z1, z2 = normals[:, 0], normals[:, 1]
    t_max = np.maximum(np.exp(mean_t + sig_t * (c1 * z1 + c2 * z2)), 0.1)
    alpha = np.maximum(np.exp(mean_a + sig_a * (c1 * z1 - c2 * z2)), 1.1)
    return t_max, alpha


def gamma_rate(t_max: Any, alpha: Any, params: GflashParameters) -> Any:
    """Rate (1/X0) of a Gamma profile of maximum ``t_max`` (X0) and shape ``alpha`` after the tilt.

    ``beta = (alpha - 1) / T (1 - profile_tilt / alpha)``, kept at or above ``(alpha - 1) / T / 4``.
    """
    alpha = np.asarray(alpha)
    beta = (alpha - 1.0) / np.asarray(t_max)
    return beta * np.maximum(1.0 - params.profile_tilt / alpha, 0.25)


def spot_profile(t_max: np.ndarray | float, alpha: np.ndarray | float, params: GflashParameters) -> tuple[Any, Any]:
    """Gamma shape and rate ``(alpha_s, beta_s)`` of the spot profile: ``T_s = T (0.813 + 0.0019 Z)``, ``alpha_s = alpha (0.844 + 0.0026 Z)``, tilted as the energy profile."""
    t_s = np.maximum(np.asarray(t_max) * (0.813 + 0.0019 * params.z_eff), 0.1)
    a_s = np.maximum(np.asarray(alpha) * (0.844 + 0.0026 * params.z_eff), 1.1)
    return a_s, gamma_rate(t_s, a_s, params)


def origin(energy: float, params: GflashParameters) -> float:
    """Depth (X0) of the calorimeter front inside the profile: ``origin_offset + origin_slope ln(E / GeV)``."""
    return params.origin_offset + params.origin_slope * math.log(energy / _GEV)


def response(energy: float, params: GflashParameters) -> float:
    """Mean deposited over incident energy: ``energy_scale + energy_slope ln(E / GeV)``, at least 0.01."""
    return max(params.energy_scale + params.energy_slope * math.log(energy / _GEV), 0.01)


def n_spots(energy: float, params: GflashParameters) -> int:
    """Number of spots ``spot_scale * 10.3 / c * (E / GeV)^spot_exponent``, at least 1."""
    mean = params.spot_scale * 10.3 / params.sampling_term * (energy / _GEV) ** params.spot_exponent
    return max(1, int(round(mean)))
