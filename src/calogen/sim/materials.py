"""The material table of the detailed simulation: what the physics needs to know about a medium.

Every entry carries density, atomic number and weight (effective values for mixtures such as air), the
radiation length, the mean excitation energy and the Sternheimer density-effect parameters
(Sternheimer, Berger & Seltzer, Atomic Data and Nuclear Data Tables 30 (1984) 261; PDG atomic and
nuclear properties). Derived densities are per mm^3.

Example:
    >>> w = material("W")
    >>> round(w.radiation_length, 3), round(w.electron_density / 1e21, 3)
    (3.504, 4.679)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from calogen.errors import CalogenError

__all__ = ["MATERIALS", "Material", "MaterialError", "Sternheimer", "material"]

AVOGADRO = 6.02214076e23
"""Avogadro's number, 1/mol."""


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
    """

    name: str
    z: float
    a: float
    density: float
    radiation_length: float
    mean_excitation: float
    sternheimer: Sternheimer

    @property
    def atom_density(self) -> float:
        """Atoms per mm^3: rho N_A / A (the 1e-3 converts cm^3 to mm^3)."""
        return self.density * AVOGADRO / self.a * 1e-3

    @property
    def electron_density(self) -> float:
        """Electrons per mm^3: Z times the atom density."""
        return self.z * self.atom_density


MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        Material("W", 74, 183.84, 19.30, 3.504, 727e-6, Sternheimer(5.4059, 0.2167, 3.4960, 0.15509, 2.8447, 0.14)),
        Material("Si", 14, 28.0855, 2.33, 93.70, 173e-6, Sternheimer(4.4355, 0.2015, 2.8716, 0.14921, 3.2546, 0.14)),
        Material("Pb", 82, 207.2, 11.35, 5.613, 823e-6, Sternheimer(6.2018, 0.3776, 3.8073, 0.09359, 3.1608, 0.14)),
        Material("Fe", 26, 55.845, 7.874, 17.57, 286e-6, Sternheimer(4.2911, -0.0012, 3.1531, 0.14680, 2.9632, 0.12)),
        Material("LAr", 18, 39.948, 1.396, 140.0, 188e-6, Sternheimer(5.2146, 0.2000, 3.0000, 0.19559, 3.0000, 0.0)),
        Material("air", 7.31, 14.64, 1.205e-3, 303900.0, 85.7e-6, Sternheimer(10.5961, 1.7418, 4.2759, 0.10914, 3.3994, 0.0)),
    )
}
"""The built-in materials by name."""


def material(name: str) -> Material:
    """The built-in material called ``name``."""
    try:
        return MATERIALS[name]
    except KeyError:
        raise MaterialError(f"unknown material {name!r}; choose one of {', '.join(MATERIALS)}") from None
