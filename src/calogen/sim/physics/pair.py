"""Pair production by photons in the nuclear and atomic field (gamma -> e- e+).

Total cross-section per atom: Geant4's G4BetheHeitler parametrisation (L. Urban; Geant4 physics
reference manual, "Gamma conversion"), valid from 1.5 MeV to 100 GeV:

    sigma(Z, k) = (Z + 1) Z [F1(X) + F2(X) Z + F3(X) / Z],   X = ln(k / m_e c^2),

with F1..F3 fifth-order polynomials in X (microbarn); below 1.5 MeV it is scaled by
((k - 2 m_e) / (1.5 MeV - 2 m_e))^2. Above 80 GeV it is held constant (the Bethe-Heitler
cross-section saturates; the LPM suppression is not modelled).

Energy sharing: complete-screening Bethe-Heitler, the fraction x = E_lepton / k of one lepton's total
energy has density proportional to 1 - (4/3) x (1 - x) on [m_e / k, 1 - m_e / k].
"""

from __future__ import annotations

import numba as nb
import numpy as np

from calogen.sim.physics.constants import ELECTRON_MASS
from calogen.sim.physics.rng import uniform

__all__ = ["cross_section", "sample_energy_fraction"]

_MICROBARN_MM2 = 1e-28
_A = (8.7842e2, -1.9625e3, 1.2949e3, -2.0028e2, 1.2575e1, -2.8333e-1)
_B = (-1.0342e1, 1.7692e1, -8.2381, 1.3063, -9.0815e-2, 2.3586e-3)
_C = (-4.5263e2, 1.1161e3, -8.6749e2, 2.1773e2, -2.0467e1, 6.5372e-1)
_LOW = 1.5
_HIGH = 8.0e4


def cross_section(z: float, k: np.ndarray) -> np.ndarray:
    """Pair-production cross-section per atom of atomic number ``z`` for photon energies ``k`` (MeV), mm^2."""
    k = np.asarray(k, dtype=np.float64)
    e = np.clip(k, _LOW, _HIGH)
    x = np.log(e / ELECTRON_MASS)
    f1, f2, f3 = (sum(c * x**i for i, c in enumerate(coef)) for coef in (_A, _B, _C))
    sigma = (z + 1.0) * z * (f1 + f2 * z + f3 / z) * _MICROBARN_MM2
    low = np.clip((k - 2.0 * ELECTRON_MASS) / (_LOW - 2.0 * ELECTRON_MASS), 0.0, 1.0)
    sigma = np.where(k < _LOW, sigma * low * low, sigma)
    return np.maximum(sigma, 0.0)


@nb.njit(cache=True, nogil=True)
def sample_energy_fraction(k: float, state: np.ndarray) -> float:
    """Total-energy fraction x of one lepton for a photon of ``k`` MeV (> 2 m_e); the other gets 1 - x."""
    eps0 = ELECTRON_MASS / k
    while True:
        x = eps0 + (1.0 - 2.0 * eps0) * uniform(state)
        if uniform(state) <= 1.0 - (4.0 / 3.0) * x * (1.0 - x):
            return x
