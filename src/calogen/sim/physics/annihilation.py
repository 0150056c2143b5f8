"""Positron annihilation at rest: e+ e- -> two back-to-back photons of m_e c^2 = 0.511 MeV each.

The positron is first brought to rest (its remaining kinetic energy is deposited by the caller); the pair
direction is isotropic. Annihilation in flight is neglected (it affects ~ a few % of positrons).
The energy released, 2 m_e c^2, is the rest energy of the positron and of an atomic electron: calogen
counts a positron's available energy as T + 2 m_e c^2.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from calogen.sim.physics.constants import ELECTRON_MASS
from calogen.sim.physics.rng import uniform

__all__ = ["ANNIHILATION_ENERGY", "PHOTON_ENERGY", "isotropic_direction"]

PHOTON_ENERGY = ELECTRON_MASS
"""Energy of each annihilation photon, MeV."""

ANNIHILATION_ENERGY = 2.0 * ELECTRON_MASS
"""Energy released by a positron annihilating at rest, MeV."""


@nb.njit(cache=True, nogil=True)
def isotropic_direction(state: np.ndarray) -> tuple[float, float, float]:
    """A unit vector uniform on the sphere (the first photon; the second goes the opposite way)."""
    cos_t = 2.0 * uniform(state) - 1.0
    sin_t = math.sqrt(max(0.0, 1.0 - cos_t * cos_t))
    phi = 2.0 * math.pi * uniform(state)
    return sin_t * math.cos(phi), sin_t * math.sin(phi), cos_t
