"""Per-material physics tables for the compiled transport loop.

Everything energy dependent is tabulated once, in numpy, on a grid uniform in ln E (default 50 points per
decade from 1 keV to 100 TeV): photon attenuation per process, restricted stopping power (collision
below the delta-ray cut plus bremsstrahlung below the photon cut), CSDA range of that loss
R(T) = int_0^T dT' / S(T'), and the inverse mean free paths of explicit delta rays and bremsstrahlung.
The loop interpolates linearly in ln E (ln R for the range), so it needs no physics constant.

Example:
    >>> from calogen.sim.materials import material
    >>> t = build_tables((material("W"), material("Si")), delta_cut=0.5, brems_cut=0.1)
    >>> t.photon_mu.shape, t.lepton_sigma.shape
    ((2, 551, 3), (2, 2, 551, 2))
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from calogen.sim.materials import Material
from calogen.sim.physics import brems, compton, ionisation, pair, photoelectric

__all__ = ["PHOTO", "COMPTON", "PAIR", "DELTA", "BREMS", "PhysicsTables", "build_tables", "photon_attenuation"]

PHOTO, COMPTON, PAIR = 0, 1, 2
"""Process columns of :attr:`PhysicsTables.photon_mu`."""
DELTA, BREMS = 0, 1
"""Process columns of :attr:`PhysicsTables.lepton_sigma`."""

_MAX_EDGES = 5


class PhysicsTables(NamedTuple):
    """Tables indexed by material m, charge c (0 = e-, 1 = e+) and grid point i; units MeV and mm.

    Attributes:
        log_e_min: ln of the first grid energy.
        inv_dlog: grid points per unit of ln E.
        log_energy: ``(n,)`` ln E of the grid.
        photon_mu: ``(M, n, 3)`` photoabsorption, Compton and pair attenuation, 1/mm.
        lepton_dedx: ``(M, 2, n)`` restricted stopping power, MeV/mm.
        log_range: ``(M, 2, n)`` ln of the range of that loss, ln mm.
        lepton_sigma: ``(M, 2, n, 2)`` delta-ray and bremsstrahlung inverse mean free paths, 1/mm.
        radiation_length: ``(M,)`` mm.
        electron_density: ``(M,)`` 1/mm^3.
        edges: ``(M, 5)`` absorption edges, MeV, deepest first, zero-padded.
    """

    log_e_min: float
    inv_dlog: float
    log_energy: np.ndarray
    photon_mu: np.ndarray
    lepton_dedx: np.ndarray
    log_range: np.ndarray
    lepton_sigma: np.ndarray
    radiation_length: np.ndarray
    electron_density: np.ndarray
    edges: np.ndarray


def photon_attenuation(medium: Material, k: np.ndarray) -> np.ndarray:
    """Linear attenuation (1/mm) of photoabsorption, Compton and pair production, ``(len(k), 3)``."""
    k = np.asarray(k, dtype=np.float64)
    photo = photoelectric.mass_attenuation(medium.name, k) * medium.density * 0.1
    comp = compton.cross_section_per_electron(k) * medium.electron_density
    pairs = pair.cross_section(medium.z, k) * medium.atom_density
    return np.stack([photo, comp, pairs], axis=-1)


def _range(energy: np.ndarray, dedx: np.ndarray) -> np.ndarray:
    """R(T) = int dT / S by the trapezoid rule in ln T, starting from R(T0) = T0 / (2 S(T0))."""
    integrand = energy / dedx
    steps = 0.5 * (integrand[1:] + integrand[:-1]) * np.diff(np.log(energy))
    return energy[0] / (2.0 * dedx[0]) + np.concatenate([[0.0], np.cumsum(steps)])


def build_tables(
    materials: tuple[Material, ...],
    *,
    delta_cut: float,
    brems_cut: float,
    e_min: float = 1e-3,
    e_max: float = 1e8,
    points_per_decade: int = 50,
) -> PhysicsTables:
    """Tables for ``materials`` with production cuts ``delta_cut`` and ``brems_cut`` (MeV)."""
    n = int(round(math.log10(e_max / e_min) * points_per_decade)) + 1
    log_energy = np.linspace(math.log(e_min), math.log(e_max), n)
    energy = np.exp(log_energy)
    k = np.maximum(energy, photoelectric.TABLE_MIN_ENERGY)
    m_count = len(materials)
    photon_mu = np.zeros((m_count, n, 3))
    dedx = np.zeros((m_count, 2, n))
    log_range = np.zeros((m_count, 2, n))
    sigma = np.zeros((m_count, 2, n, 2))
    edges = np.zeros((m_count, _MAX_EDGES))
    for m, medium in enumerate(materials):
        photon_mu[m] = photon_attenuation(medium, k)
        for c, positron in enumerate((False, True)):
            soft = brems.soft_loss(medium.radiation_length, energy, brems_cut)
            dedx[m, c] = ionisation.restricted_dedx(medium, energy, delta_cut, positron) + soft
            log_range[m, c] = np.log(_range(energy, dedx[m, c]))
            sigma[m, c, :, DELTA] = ionisation.delta_inverse_mean_free_path(medium, energy, delta_cut, positron)
            sigma[m, c, :, BREMS] = brems.inverse_mean_free_path(medium.radiation_length, energy, brems_cut)
        medium_edges = photoelectric.EDGES.get(medium.name, ())
        edges[m, : len(medium_edges)] = medium_edges
    return PhysicsTables(
        log_e_min=float(log_energy[0]),
        inv_dlog=float((n - 1) / (log_energy[-1] - log_energy[0])),
        log_energy=log_energy,
        photon_mu=photon_mu,
        lepton_dedx=dedx,
        log_range=log_range,
        lepton_sigma=sigma,
        radiation_length=np.array([m.radiation_length for m in materials], dtype=np.float64),
        electron_density=np.array([m.electron_density for m in materials], dtype=np.float64),
        edges=edges,
    )
