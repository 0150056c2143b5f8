"""The material table of the detailed simulation: what the physics needs to know about a medium.

Every entry carries density, atomic number and weight (effective values for mixtures such as air), the
radiation length, the mean excitation energy, the Sternheimer density-effect parameters
(Sternheimer, Berger & Seltzer, Atomic Data and Nuclear Data Tables 30 (1984) 261; PDG atomic and
nuclear properties) and the critical energy for electrons (PDG, Rossi's definition). Derived densities are
per mm^3; the Moliere radius is ``21.2052 MeV X0 / Ec``.

Example:
    >>> w = material("W")
    >>> round(w.radiation_length, 3), round(w.electron_density / 1e21, 3), round(w.moliere_radius, 2)
    (3.504, 4.679, 9.32)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from calogen.errors import CalogenError

__all__ = ["MATERIALS", "SCALE_ENERGY", "Material", "MaterialError", "Sternheimer", "material"]

AVOGADRO = 6.02214076e23
"""Avogadro's number, 1/mol."""

SCALE_ENERGY = 21.2052
"""The multiple-scattering scale energy E_s = m_e c^2 sqrt(4 pi / alpha), MeV (Moliere radius = E_s X0 / Ec)."""


class MaterialError(CalogenError):
    """An unknown material name."""


@dataclass(frozen=True)
class Sternheimer:
    """Density-effect parameters: delta(X) as a function of X = log10(beta * gamma).

    delta = 2 ln10 X - C + a (X1 - X)^m for X0 <= X < X1, 2 ln10 X - C above X1, and
    delta0 10^(2 (X - X0)) below X0 (conductors; delta0 = 0 for insulators).
    """

    c: float
    x0: float
    x1: float
    a: float
    m: float
    delta0: float

    def delta(self, x: float) -> float:
        """The density correction delta at X = log10(beta gamma)."""
        if x >= self.x1:
            return 2.0 * math.log(10.0) * x - self.c
        if x >= self.x0:
            return 2.0 * math.log(10.0) * x - self.c + self.a * (self.x1 - x) ** self.m
        return self.delta0 * 10.0 ** (2.0 * (x - self.x0))


@dataclass(frozen=True)
class Material:
    """A homogeneous medium.

    Args:
        name: short name (``W``, ``Si``, ...).
        z, a: atomic number and atomic weight (g/mol); effective values for mixtures.
        density: g/cm^3.
        radiation_length: X0 in mm.
        mean_excitation: I in MeV.
        sternheimer: density-effect parameters.
        critical_energy: Ec for electrons in MeV.
    """

    name: str
    z: float
    a: float
    density: float
    radiation_length: float
    mean_excitation: float
    sternheimer: Sternheimer
    critical_energy: float

    @property
    def atom_density(self) -> float:
        """Atoms per mm^3: rho N_A / A (the 1e-3 converts cm^3 to mm^3)."""
        return self.density * AVOGADRO / self.a * 1e-3

    @property
    def electron_density(self) -> float:
        """Electrons per mm^3: Z times the atom density."""
        return self.z * self.atom_density

    @property
    def moliere_radius(self) -> float:
        """Moliere radius in mm: ``E_s X0 / Ec`` with the scale energy E_s = 21.2052 MeV."""
        return SCALE_ENERGY * self.radiation_length / self.critical_energy


MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        Material("W", 74, 183.84, 19.30, 3.504, 727e-6, Sternheimer(5.4059, 0.2167, 3.4960, 0.15509, 2.8447, 0.14), 7.97),
        Material("Si", 14, 28.0855, 2.33, 93.70, 173e-6, Sternheimer(4.4355, 0.2015, 2.8716, 0.14921, 3.2546, 0.14), 40.19),
        Material("Pb", 82, 207.2, 11.35, 5.612, 823e-6, Sternheimer(6.2018, 0.3776, 3.8073, 0.09359, 3.1608, 0.14), 7.43),
        Material("Cu", 29, 63.546, 8.96, 14.36, 322e-6, Sternheimer(4.4190, -0.0254, 3.2792, 0.14339, 2.9044, 0.08), 19.42),
        Material("Fe", 26, 55.845, 7.874, 17.57, 286e-6, Sternheimer(4.2911, -0.0012, 3.1531, 0.14680, 2.9632, 0.12), 21.68),
        Material("LAr", 18, 39.948, 1.396, 140.0, 188e-6, Sternheimer(5.2146, 0.2000, 3.0000, 0.19559, 3.0000, 0.0), 32.84),
        Material("air", 7.31, 14.64, 1.205e-3, 303900.0, 85.7e-6, Sternheimer(10.5961, 1.7418, 4.2759, 0.10914, 3.3994, 0.0), 87.92),
    )
}
"""The built-in materials by name."""


def material(name: str) -> Material:
    """The built-in material called ``name``."""
    try:
        return MATERIALS[name]
    except KeyError:
        raise MaterialError(f"unknown material {name!r}; choose one of {', '.join(MATERIALS)}") from None
