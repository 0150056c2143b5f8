"""Photoelectric absorption: the photon disappears, a photo-electron of k - B carries on.

Cross-section: log-log interpolation of tabulated mass photoabsorption coefficients (cm^2/g), close to
the NIST XCOM photoelectric column (Berger et al., NIST Standard Reference Database 8), with the
absorption edges as double entries; mu = table(k) * rho / 10 in 1/mm. B is the binding energy of the
deepest shell open at k (K edges: tungsten 69.525 keV, lead 88.005 keV, copper 8.979 keV); it is
deposited locally (fluorescence and Auger cascades are not followed). The photo-electron keeps the photon direction.

The tables start at 5 keV, the default photon tracking cut; W, Si, Pb and Cu are tabulated. Pb and Cu
up to 0.8 MeV are the photoabsorption cross-sections of Elam, Ravel and Sieber (Radiat. Phys. Chem. 63
(2002) 121), read 0.05% off each edge; above, within about 10% of XCOM.
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
    "Pb": (
        (5e-3, 723.1), (6e-3, 460.4), (8e-3, 222.9), (1.0e-2, 125.8), (1.3035e-2, 63.18), (1.3035e-2, 158),
        (1.5200e-2, 104.6), (1.5200e-2, 145), (1.5861e-2, 131.4), (1.5861e-2, 151.5), (2e-2, 84.07),
        (3e-2, 28.9), (4e-2, 13.37), (5e-2, 7.303), (6e-2, 4.438), (8e-2, 2.015), (8.8005e-2, 1.549),
        (8.8005e-2, 7.311), (0.1, 5.244), (0.15, 1.817), (0.2, 0.8475), (0.3, 0.2933), (0.4, 0.1419),
        (0.5, 0.08268), (0.6, 0.05412), (0.8, 0.02874), (1.0, 0.0172), (1.25, 0.0114), (1.5, 0.0084),
        (2.0, 0.0053), (3.0, 0.0030), (5.0, 0.00157), (10.0, 7.1e-4), (100.0, 6.3e-5), (1e5, 6.3e-8),
    ),
    "Cu": (
        (5e-3, 187.2), (6e-3, 113.2), (8e-3, 50.69), (8.979e-3, 36.62), (8.979e-3, 276.3), (1.0e-2, 214.7),
        (1.5e-2, 73.18), (2e-2, 33.13), (3e-2, 10.47), (4e-2, 4.527), (5e-2, 2.339), (6e-2, 1.355),
        (8e-2, 0.5685), (0.1, 0.2882), (0.15, 0.08358), (0.2, 0.03493), (0.3, 0.01052), (0.4, 0.00467),
        (0.5, 0.002572), (0.6, 0.001623), (0.8, 0.0008274), (1.0, 5.6e-4), (2.0, 1.7e-4), (5.0, 4.9e-5),
        (10.0, 2.3e-5), (100.0, 2.1e-6), (1e5, 2.1e-9),
    ),
}  # fmt: skip

EDGES: dict[str, tuple[float, ...]] = {
    "W": (69.525e-3, 12.100e-3, 11.544e-3, 10.207e-3, 2.820e-3),
    "Si": (1.839e-3,),
    "Pb": (88.005e-3, 15.861e-3, 15.200e-3, 13.035e-3, 3.851e-3),
    "Cu": (8.979e-3, 1.096e-3),
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
