"""GFLASH radial profile: core and tail radii and the core probability along the shower.

At depth ``tau`` (t in units of T) a spot sits at radius ``r = R_M R sqrt(u / (1 - u))``, ``R = R_C`` with
probability p and ``R_T`` otherwise, so that
``f(r) = p 2 r R_C^2 / (r^2 + R_C^2)^2 + (1 - p) 2 r R_T^2 / (r^2 + R_T^2)^2``; R_C, R_T and p are the paper's
functions of tau, E and Z with the sampling corrections in ``1 - e_hat`` and ``1 / Fs`` (:func:`radial_shape`),
both radii scaled by calibration factors times ``(E / GeV)^radius_slope`` (:func:`radius_scales`).

Reference: G. Grindhammer and S. Peters, hep-ex/0001020.

Example:
    >>> from calogen.sim.gflash_params import GflashParameters
    >>> radial_parameters(np.array([0.5, 1.0, 2.0]), 50_000.0, GflashParameters.default()).shape
    (3, 3)
"""

from __future__ import annotations

import math
from typing import Any

import numba as nb
import numpy as np

from calogen.sim.gflash_params import GflashParameters

__all__ = [
    "calibrate_radial",
    "published_radial",
    "radial_coefficients",
    "radial_parameters",
    "radial_shape",
    "radius_scales",
    "scale_radial",
]

_GEV = 1000.0


def radial_coefficients(energy: float, params: GflashParameters) -> np.ndarray:
    """Coefficients ``(11,)`` of R_C, R_T and p at incident energy ``energy`` MeV (see :func:`radial_shape`)."""
    log_e = math.log(energy / _GEV)
    z = params.z_eff
    return np.array(
        [
            0.0251 + 0.00319 * log_e,  # z1: R_C = z1 + z2 tau
            0.1162 - 0.000381 * z,  # z2
            2.632 - 0.00094 * z,  # p1: p = p1 exp(x - exp(x)), x = (p2 - tau) / p3
            0.401 + 0.00187 * z,  # p2
            1.313 - 0.0686 * log_e,  # p3
            0.659 - 0.00309 * z,  # k1: R_T = k1 (exp(k3 (tau - k2)) + exp(k4 (tau - k2)))
            0.645,  # k2
            -2.59,  # k3
            0.3585 + 0.0412 * log_e,  # k4
            1.0 - params.e_hat,
            1.0 / params.sampling_frequency,
        ]
    )


@nb.njit(cache=True)
def radial_shape(tau: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Published R_C, R_T (units of R_M) and p at depths tau ``(K,)``, with sampling corrections: ``(3, K)``.

    ``R_C += -0.0203 (1 - e_hat) + 0.0397 / Fs exp(-tau)``,
    ``R_T += -0.14 (1 - e_hat) - 0.495 / Fs exp(-tau)``,
    ``p += (1 - e_hat) (0.348 - 0.642 / Fs exp(-(tau - 1)^2))``.
    """
    one_m_ehat = c[9]
    inv_fs = c[10]
    out = np.empty((3, tau.shape[0]))
    for k in range(tau.shape[0]):
        t = tau[k]
        e_tau = math.exp(-t)
        x = (c[3] - t) / c[4]
        out[0, k] = c[0] + c[1] * t - 0.0203 * one_m_ehat + 0.0397 * inv_fs * e_tau
        out[1, k] = c[5] * (math.exp(c[7] * (t - c[6])) + math.exp(c[8] * (t - c[6]))) - 0.14 * one_m_ehat - 0.495 * inv_fs * e_tau
        out[2, k] = c[2] * math.exp(x - math.exp(x)) + one_m_ehat * (0.348 - 0.642 * inv_fs * math.exp(-((t - 1.0) ** 2)))
    return out


def published_radial(tau: np.ndarray, energy: float, params: GflashParameters) -> np.ndarray:
    """Uncalibrated R_C, R_T (units of R_M) and p at depths ``tau`` ``(K,)`` (units of T) for energy MeV: ``(3, K)``."""
    return radial_shape(np.ascontiguousarray(tau, dtype=np.float64), radial_coefficients(energy, params))


@nb.njit(cache=True)
def scale_radial(raw: np.ndarray, core_scale: float, tail_scale: float, weight_offset: float) -> np.ndarray:
    """``(3, K)`` published R_C, R_T, p -> ``max(R_C core_scale, 1e-4)``, ``max(R_T tail_scale, 1e-4)``, ``clip(p + weight_offset, 0, 1)``."""
    out = np.empty_like(raw)
    for k in range(raw.shape[1]):
        out[0, k] = max(raw[0, k] * core_scale, 1e-4)
        out[1, k] = max(raw[1, k] * tail_scale, 1e-4)
        out[2, k] = min(max(raw[2, k] + weight_offset, 0.0), 1.0)
    return out


def radius_scales(energy: Any, params: GflashParameters) -> tuple[Any, Any]:
    """Factors on R_C and R_T at incident energy ``energy`` MeV: ``core_radius_scale (E / GeV)^radius_slope`` and
    ``tail_radius_scale (E / GeV)^radius_slope``."""
    factor = (np.asarray(energy, dtype=np.float64) / _GEV) ** params.radius_slope
    return params.core_radius_scale * factor, params.tail_radius_scale * factor


def calibrate_radial(raw: np.ndarray, params: GflashParameters, energy: float | np.ndarray = _GEV) -> np.ndarray:
    """Apply the radial calibration to ``(3, K)`` published values: scale R_C and R_T, shift p, clip to valid ranges.

    ``energy`` (MeV) is the incident energy, a number or one per column ``(K,)``.
    """
    scaled = np.array(raw, dtype=np.float64)
    core, tail = radius_scales(energy, params)
    scaled[0] *= core
    scaled[1] *= tail
    return scale_radial(scaled, 1.0, 1.0, params.core_weight_offset)


def radial_parameters(tau: np.ndarray, energy: float, params: GflashParameters) -> np.ndarray:
    """Calibrated R_C, R_T (units of R_M) and core probability p at depths ``tau`` ``(K,)``: ``(3, K)``."""
    return calibrate_radial(published_radial(tau, energy, params), params, energy)
