"""Photoelectric absorption: the photon disappears, a photo-electron of k - B carries on.

Cross-section: log-log interpolation of tabulated mass photoabsorption coefficients (cm^2/g), close to
the NIST XCOM photoelectric column (Berger et al., NIST Standard Reference Database 8), with the
absorption edges as double entries; mu = table(k) * rho / 10 in 1/mm. B is the binding energy of the
deepest shell open at k (K edge of tungsten 69.525 keV); it is deposited locally (fluorescence and
Auger cascades are not followed). The photo-electron keeps the photon direction.

The tables start at 5 keV, the default photon tracking cut; only W and Si are tabulated.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from calogen.errors import CalogenError

__all__ = ["EDGES", "PhotoelectricDataError", "binding_energy", "mass_attenuation"]


class PhotoelectricDataError(CalogenError):
    """No photoabsorption table for a material, or an energy below the tables."""


# (energy MeV, cm^2/g); an edge appears twice, below then above.
_TABLES: dict[str, tuple[tuple[float, float], ...]] = {
    "W": (
        (5e-3, 571.0), (6e-3, 352.0), (8e-3, 164.0), (1.0e-2, 91.0),
        (1.0207e-2, 86.2), (1.0207e-2, 227.6), (1.1544e-2, 163.5), (1.1544e-2, 226.3),
        (1.2100e-2, 197.0), (1.2100e-2, 229.3), (1.5e-2, 135.3), (2e-2, 63.1), (3e-2, 21.2),
        (4e-2, 9.67), (5e-2, 5.20), (6e-2, 3.13), (6.9525e-2, 2.06), (6.9525e-2, 10.74),
        (8e-2, 7.40), (0.1, 4.13), (0.15, 1.376), (0.2, 0.629), (0.3, 0.211), (0.4, 0.0995),
        (0.5, 0.058), (0.6, 0.0383), (0.8, 0.0202), (1.0, 0.0129), (1.25, 0.0085), (1.5, 0.0062),
        (2.0, 0.0039), (3.0, 0.0022), (5.0, 0.00115), (10.0, 5.2e-4), (100.0, 4.6e-5), (1e5, 4.6e-8),
    ),
    "Si": (
        (5e-3, 242.0), (6e-3, 144.5), (8e-3, 62.9), (1.0e-2, 32.6), (1.5e-2, 9.52), (2e-2, 3.87),
        (3e-2, 1.05), (4e-2, 0.443), (5e-2, 0.227), (6e-2, 0.131), (8e-2, 0.0553), (0.1, 0.027),
        (0.15, 0.0080), (0.2, 0.0034), (0.3, 1.0e-3), (0.4, 4.4e-4), (0.5, 2.4e-4), (0.6, 1.5e-4),
        (0.8, 7.5e-5), (1.0, 4.6e-5), (2.0, 1.5e-5), (5.0, 4.7e-6), (10.0, 2.2e-6), (100.0, 2.0e-7),
        (1e5, 2.0e-10),
    ),
}  # fmt: skip

EDGES: dict[str, tuple[float, ...]] = {
    "W": (69.525e-3, 12.100e-3, 11.544e-3, 10.207e-3, 2.820e-3),
    "Si": (1.839e-3,),
}
"""Absorption-edge (binding) energies in MeV, deepest shell first."""

TABLE_MIN_ENERGY = 5e-3
"""Lowest tabulated photon energy, MeV."""


def mass_attenuation(name: str, k: np.ndarray) -> np.ndarray:
    """Photoabsorption mass attenuation of material ``name`` at photon energies ``k`` (MeV), cm^2/g."""
    if name not in _TABLES:
        raise PhotoelectricDataError(
            f"no photoabsorption table for material {name!r}; tabulated: {', '.join(_TABLES)}"
        )
    table = np.array(_TABLES[name])
    energy = table[:, 0].copy()
    energy[1:][np.diff(table[:, 0]) == 0] *= 1.0 + 1e-9  # put the above-edge value just above the edge
    k = np.asarray(k, dtype=np.float64)
    return np.exp(np.interp(np.log(k), np.log(energy), np.log(table[:, 1])))


@nb.njit(cache=True, nogil=True)
def binding_energy(edges: np.ndarray, k: float) -> float:
    """Binding energy (MeV) of the deepest shell with edge <= k; ``edges`` deepest first, zero-padded."""
    for i in range(edges.shape[0]):
        if edges[i] <= k:
            return edges[i]
    return 0.0
