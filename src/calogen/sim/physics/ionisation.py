"""Ionisation by electrons (Moller) and positrons (Bhabha): restricted stopping power and delta rays.

Restricted stopping power below the delta-ray cut T_c (Berger-Seltzer form, as in Geant4's
G4MollerBhabhaModel), tau = T/m_e, d = min(T_c, T_max)/m_e with T_max = T/2 (e-) or T (e+):

    dE/dx = 2 pi r_e^2 m_e c^2 n_el / beta^2 [ln(2 (tau + 2) / (I/m_e)^2) + F(tau, d) - delta]

    F-(tau, d) = -1 - beta^2 + ln((tau - d) d) + tau/(tau - d) + [d^2/2 + (2 tau + 1) ln(1 - d/tau)] / gamma^2
    F+(tau, d) = ln(tau d) - beta^2/tau [tau + 2 d - y (3 d^2/2 + y (d - d^3/3 + y (d^2/2 - tau d^3/3 + d^4/4)))],
                 y = 1 / (gamma + 1)

with delta the Sternheimer density correction. Delta rays above T_c: Moller / Bhabha cross-sections per
electron integrated from x_min = T_c / T to x_max = T_max / T (energy fraction x of the delta ray),
sampled as in the Geant4 physics reference manual (1/x^2 law, then rejection on the exact form).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from calogen.sim.materials import Material
from calogen.sim.physics.constants import ELECTRON_MASS, TWO_PI_MC2_RE2
from calogen.sim.physics.rng import uniform

__all__ = ["delta_cos_theta", "delta_inverse_mean_free_path", "restricted_dedx", "sample_delta_fraction"]


def _kinematics(kinetic: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tau = np.asarray(kinetic, dtype=np.float64) / ELECTRON_MASS
    gamma = tau + 1.0
    beta2 = tau * (tau + 2.0) / gamma**2
    return tau, gamma, beta2


def restricted_dedx(medium: Material, kinetic: np.ndarray, cut: float, positron: bool) -> np.ndarray:
    """Collision stopping power (MeV/mm) restricted to energy transfers below ``cut`` (MeV)."""
    tau, gamma, beta2 = _kinematics(kinetic)
    t_max = tau if positron else 0.5 * tau
    d = np.minimum(cut / ELECTRON_MASS, t_max)
    log_term = np.log(2.0 * (tau + 2.0) / (medium.mean_excitation / ELECTRON_MASS) ** 2)
    if positron:
        y = 1.0 / (1.0 + gamma)
        d2, d3, d4 = d * d * 0.5, d**3 / 3.0, d**4 * 0.25
        f = np.log(tau * d) - beta2 / tau * (tau + 2.0 * d - y * (3.0 * d2 + y * (d - d3 + y * (d2 - tau * d3 + d4))))
    else:
        f = -1.0 - beta2 + np.log((tau - d) * d) + tau / (tau - d)
        f += (0.5 * d * d + (2.0 * tau + 1.0) * np.log(1.0 - d / tau)) / gamma**2
    x = np.log10(np.sqrt(tau * (tau + 2.0)))
    delta = np.array([medium.sternheimer.delta(float(v)) for v in np.ravel(x)]).reshape(np.shape(x))
    dedx = TWO_PI_MC2_RE2 * medium.electron_density / beta2 * (log_term + f - delta)
    return np.maximum(dedx, 0.0)


def delta_inverse_mean_free_path(medium: Material, kinetic: np.ndarray, cut: float, positron: bool) -> np.ndarray:
    """Inverse mean free path (1/mm) for delta rays above ``cut`` (MeV)."""
    t = np.asarray(kinetic, dtype=np.float64)
    tau, gamma, beta2 = _kinematics(t)
    x_max = 1.0 if positron else 0.5
    x_min = np.minimum(cut / t, x_max)
    if positron:
        y = 1.0 / (1.0 + gamma)
        y12 = 1.0 - 2.0 * y
        b1, b2 = 2.0 - y * y, y12 * (3.0 + y * y)
        b4 = y12**3
        b3 = b4 + y12**2
        cross = (x_max - x_min) * (
            1.0 / (beta2 * x_min * x_max) + b2 - 0.5 * b3 * (x_min + x_max) + b4 * (x_min**2 + x_min * x_max + x_max**2) / 3.0
        ) - b1 * np.log(x_max / x_min)
    else:
        gg = (2.0 * gamma - 1.0) / gamma**2
        cross = (
            (x_max - x_min) * (1.0 - gg + 1.0 / (x_min * x_max) + 1.0 / ((1.0 - x_min) * (1.0 - x_max)))
            - gg * np.log(x_max * (1.0 - x_min) / (x_min * (1.0 - x_max)))
        ) / beta2
    sigma = TWO_PI_MC2_RE2 * medium.electron_density * cross / t
    return np.where(x_min < x_max, np.maximum(sigma, 0.0), 0.0)


@nb.njit(cache=True, nogil=True)
def sample_delta_fraction(kinetic: float, cut: float, positron: bool, state: np.ndarray) -> float:
    """Energy fraction x = T_delta / T of a delta ray above ``cut``; requires cut < T_max."""
    tau = kinetic / ELECTRON_MASS
    gamma = tau + 1.0
    beta2 = tau * (tau + 2.0) / (gamma * gamma)
    x_min = cut / kinetic
    x_max = 1.0 if positron else 0.5
    if positron:
        y = 1.0 / (1.0 + gamma)
        y12 = 1.0 - 2.0 * y
        b1, b2 = 2.0 - y * y, y12 * (3.0 + y * y)
        b4 = y12 * y12 * y12
        b3 = b4 + y12 * y12
        x2 = x_min * x_min
        g_max = 1.0 + (x2 * x2 * b4 - x_min * x2 * b3 + x2 * b2 - x_min * b1) * beta2
    else:
        gg = (2.0 * gamma - 1.0) / (gamma * gamma)
        y = 1.0 - x_max
        g_max = 1.0 - gg * x_max + x_max * x_max * (1.0 - gg + (1.0 - gg * y) / (y * y))
    while True:
        q = uniform(state)
        x = x_min * x_max / (x_min * (1.0 - q) + x_max * q)
        if positron:
            x2 = x * x
            g = 1.0 + (x2 * x2 * b4 - x * x2 * b3 + x2 * b2 - x * b1) * beta2
        else:
            y = 1.0 - x
            g = 1.0 - gg * x + x * x * (1.0 - gg + (1.0 - gg * y) / (y * y))
        if g_max * uniform(state) <= g:
            return x


@nb.njit(cache=True, nogil=True)
def delta_cos_theta(kinetic: float, delta: float) -> float:
    """Polar-angle cosine of a delta ray of ``delta`` MeV knocked out by a lepton of ``kinetic`` MeV (two-body kinematics)."""
    return min(1.0, math.sqrt(delta * (kinetic + 2.0 * ELECTRON_MASS) / (kinetic * (delta + 2.0 * ELECTRON_MASS))))
