"""Energy-loss fluctuations of a restricted continuous loss (Gamma distributed).

For a step s (mm) with mean restricted loss <Delta> (MeV), the Bohr variance of energy transfers below
the cut T_c (MeV) in a medium of n_el electrons/mm^3 is

    sigma^2 = 2 pi r_e^2 m_e c^2 n_el T_c s (1/beta^2 - 1/2)

(Geant4 physics reference manual, "Fluctuations in energy loss", Gaussian regime). The loss is drawn from
a Gamma law with that mean and variance: shape <Delta>^2 / sigma^2, scale sigma^2 / <Delta>, which stays
positive and skews to the right for thin layers.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from calogen.sim.physics.constants import ELECTRON_MASS, TWO_PI_MC2_RE2
from calogen.sim.physics.rng import gamma

__all__ = ["bohr_variance", "sample_loss"]


@nb.njit(cache=True, nogil=True)
def bohr_variance(kinetic: float, electron_density: float, cut: float, step: float) -> float:
    """sigma^2 (MeV^2) of the restricted loss over ``step`` mm for a lepton of ``kinetic`` MeV."""
    total = kinetic + ELECTRON_MASS
    beta2 = kinetic * (kinetic + 2.0 * ELECTRON_MASS) / (total * total)
    return TWO_PI_MC2_RE2 * electron_density * cut * step * (1.0 / beta2 - 0.5)


@nb.njit(cache=True, nogil=True)
def sample_loss(mean: float, variance: float, state: np.ndarray) -> float:
    """A Gamma-distributed loss (MeV) with the given mean and variance (returns ``mean`` if either is 0)."""
    if mean <= 0.0 or variance <= 0.0:
        return mean
    return gamma(state, mean * mean / variance) * (variance / mean)
