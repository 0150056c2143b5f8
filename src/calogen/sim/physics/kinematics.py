"""Direction bookkeeping shared by the interactions: rotations and the modified Tsai polar angle."""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from calogen.sim.physics.constants import ELECTRON_MASS
from calogen.sim.physics.rng import uniform, uniform_open

__all__ = ["combine", "rotate", "tsai_cos_theta"]


@nb.njit(cache=True, nogil=True)
def rotate(
    ux: float, uy: float, uz: float, cos_t: float, cos_phi: float, sin_phi: float
) -> tuple[float, float, float]:
    """Unit vector at polar angle acos(cos_t) and azimuth phi (given by its cosine and sine) around the unit vector ``u``."""
    sin_t = math.sqrt(max(0.0, 1.0 - cos_t * cos_t))
    dx = sin_t * cos_phi
    dy = sin_t * sin_phi
    perp = math.sqrt(ux * ux + uy * uy)
    if perp > 1e-10:
        nx = (ux * uz * dx - uy * dy) / perp + ux * cos_t
        ny = (uy * uz * dx + ux * dy) / perp + uy * cos_t
        nz = -perp * dx + uz * cos_t
    elif uz > 0.0:
        nx, ny, nz = dx, dy, cos_t
    else:
        nx, ny, nz = -dx, dy, -cos_t
    norm = 1.0 / math.sqrt(nx * nx + ny * ny + nz * nz)
    return nx * norm, ny * norm, nz * norm


@nb.njit(cache=True, nogil=True)
def combine(ax: float, ay: float, az: float, bx: float, by: float, bz: float, fallback_z: float) -> tuple[float, float, float]:
    """Unit vector along a - b (momentum conservation); (0, 0, fallback_z) if a = b."""
    cx, cy, cz = ax - bx, ay - by, az - bz
    norm = math.sqrt(cx * cx + cy * cy + cz * cz)
    if norm == 0.0:
        return 0.0, 0.0, fallback_z
    return cx / norm, cy / norm, cz / norm


@nb.njit(cache=True, nogil=True)
def tsai_cos_theta(kinetic: float, state: np.ndarray) -> float:
    """Polar angle of a brems photon or pair lepton of ``kinetic`` energy (MeV), modified Tsai distribution.

    theta = u m_e / E with u drawn from a mixture of Gamma(2) laws of rates 1.6 (weight 1/4) and 1.6/3,
    u <= u_max = 2 (1 + T/m_e); cos theta = 1 - 2 u^2 / u_max^2 (Geant4 physics reference manual,
    "G4ModifiedTsai").
    """
    u_max = 2.0 * (1.0 + kinetic / ELECTRON_MASS)
    while True:
        rate = 1.6 if uniform(state) < 0.25 else 1.6 / 3.0
        u = -math.log(uniform_open(state) * uniform_open(state)) / rate  # Gamma(2): sum of two exponentials
        if u <= u_max:
            return 1.0 - 2.0 * u * u / (u_max * u_max)
