"""Physical constants in calogen units (MeV, mm), CODATA 2018."""

from __future__ import annotations

import math

__all__ = ["CLASSICAL_ELECTRON_RADIUS", "ELECTRON_MASS", "FINE_STRUCTURE", "TWO_PI_MC2_RE2"]

ELECTRON_MASS = 0.51099895
"""Electron rest energy m_e c^2, MeV."""

CLASSICAL_ELECTRON_RADIUS = 2.8179403262e-12
"""r_e, mm."""

FINE_STRUCTURE = 1.0 / 137.035999084
"""alpha."""

TWO_PI_MC2_RE2 = 2.0 * math.pi * ELECTRON_MASS * CLASSICAL_ELECTRON_RADIUS**2
"""2 pi m_e c^2 r_e^2, MeV mm^2: the prefactor of the Moller/Bhabha and stopping-power formulas."""
