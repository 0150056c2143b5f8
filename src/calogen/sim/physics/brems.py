"""Bremsstrahlung of electrons and positrons, complete screening with a low-energy damping.

Photon spectrum per unit path for an electron of kinetic energy T and total energy E = T + m_e:

    d(Sigma)/dk = D(T) / (X0 k) (4/3 - 4/3 y + y^2),   y = k / E,   0 < k <= T,
    D(T) = (1 + 3.3 MeV / T)^(-1/2)

(Rossi; PDG "Passage of particles through matter"; D corrects the overestimate of complete screening at
low T). Photons above the cut k_c are produced explicitly with the inverse mean free path

    Sigma(T) = D / X0 [4/3 ln(T / k_c) - 4/3 (T - k_c) / E + (T^2 - k_c^2) / (2 E^2)]   (1/mm),

and the photons below are a continuous loss

    (dE/dx)_soft = D E / X0 [4/3 y_c - 2/3 y_c^2 + y_c^3 / 3],   y_c = min(k_c, T) / E   (MeV/mm).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from calogen.sim.physics.constants import ELECTRON_MASS
from calogen.sim.physics.rng import uniform

__all__ = ["inverse_mean_free_path", "low_energy_damping", "sample_photon_energy", "soft_loss"]


def low_energy_damping(kinetic: np.ndarray) -> np.ndarray:
    """D(T) = (1 + 3.3 MeV / T)^(-1/2) for kinetic energies T (MeV)."""
    return (1.0 + 3.3 / np.asarray(kinetic, dtype=np.float64)) ** -0.5


def inverse_mean_free_path(radiation_length: float, kinetic: np.ndarray, cut: float) -> np.ndarray:
    """Inverse mean free path (1/mm) for photons above ``cut`` (MeV) at kinetic energies T (MeV)."""
    t = np.asarray(kinetic, dtype=np.float64)
    e = t + ELECTRON_MASS
    tt = np.maximum(t, cut)
    sigma = 4.0 / 3.0 * np.log(tt / cut) - 4.0 / 3.0 * (tt - cut) / e + (tt * tt - cut * cut) / (2.0 * e * e)
    return np.where(t > cut, low_energy_damping(t) * sigma / radiation_length, 0.0)


def soft_loss(radiation_length: float, kinetic: np.ndarray, cut: float) -> np.ndarray:
    """Energy loss (MeV/mm) to photons below ``cut`` (MeV) at kinetic energies T (MeV)."""
    t = np.asarray(kinetic, dtype=np.float64)
    e = t + ELECTRON_MASS
    yc = np.minimum(cut, t) / e
    return low_energy_damping(t) * e / radiation_length * (4.0 / 3.0 * yc - 2.0 / 3.0 * yc**2 + yc**3 / 3.0)


@nb.njit(cache=True, nogil=True)
def sample_photon_energy(kinetic: float, cut: float, state: np.ndarray) -> float:
    """Photon energy k in [cut, T] (MeV): k from dk/k, accepted with (4/3 - 4/3 y + y^2) / (4/3)."""
    total = kinetic + ELECTRON_MASS
    log_ratio = math.log(kinetic / cut)
    while True:
        k = cut * math.exp(log_ratio * uniform(state))
        y = k / total
        if uniform(state) * (4.0 / 3.0) <= 4.0 / 3.0 - 4.0 / 3.0 * y + y * y:
            return k
