"""Compton scattering on free electrons (Klein-Nishina).

Total cross-section per electron, kappa = k / m_e c^2:

    sigma = 2 pi r_e^2 { (1 + kappa)/kappa^2 [2 (1 + kappa)/(1 + 2 kappa) - ln(1 + 2 kappa)/kappa]
                         + ln(1 + 2 kappa)/(2 kappa) - (1 + 3 kappa)/(1 + 2 kappa)^2 }

(0.2112 b at 1 MeV). The scattered photon keeps a fraction eps = k'/k in [1/(1 + 2 kappa), 1], sampled by
the Butcher-Messel method of the Geant4 physics reference manual ("G4KleinNishinaCompton"): eps from a
mixture of 1/eps and eps densities, accepted with 1 - eps sin^2(theta)/(1 + eps^2). Atomic binding
and Doppler broadening are neglected.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from calogen.sim.physics.constants import CLASSICAL_ELECTRON_RADIUS, ELECTRON_MASS
from calogen.sim.physics.rng import uniform

__all__ = ["cross_section_per_electron", "sample_scattering"]


def cross_section_per_electron(k: np.ndarray) -> np.ndarray:
    """Klein-Nishina cross-section per electron for photon energies ``k`` (MeV), mm^2."""
    kappa = np.asarray(k, dtype=np.float64) / ELECTRON_MASS
    log = np.log1p(2.0 * kappa)
    one2k = 1.0 + 2.0 * kappa
    bracket = (1.0 + kappa) / kappa**2 * (2.0 * (1.0 + kappa) / one2k - log / kappa) + log / (2.0 * kappa)
    bracket -= (1.0 + 3.0 * kappa) / one2k**2
    return 2.0 * math.pi * CLASSICAL_ELECTRON_RADIUS**2 * bracket


@nb.njit(cache=True, nogil=True)
def sample_scattering(k: float, state: np.ndarray) -> tuple[float, float]:
    """(eps, cos theta) of the scattered photon for an incident photon of ``k`` MeV."""
    kappa = k / ELECTRON_MASS
    eps0 = 1.0 / (1.0 + 2.0 * kappa)
    eps0sq = eps0 * eps0
    alpha1 = -math.log(eps0)
    alpha2 = alpha1 + 0.5 * (1.0 - eps0sq)
    while True:
        if alpha1 > alpha2 * uniform(state):
            eps = math.exp(-alpha1 * uniform(state))
            epssq = eps * eps
        else:
            epssq = eps0sq + (1.0 - eps0sq) * uniform(state)
            eps = math.sqrt(epssq)
        one_minus_cos = (1.0 - eps) / (eps * kappa)
        sin2 = one_minus_cos * (2.0 - one_minus_cos)
        if 1.0 - eps * sin2 / (1.0 + epssq) >= uniform(state):
            return eps, 1.0 - one_minus_cos
