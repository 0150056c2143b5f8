"""The detector of the detailed simulation: planar slabs along z, unbounded transversely.

Slab ``i`` covers ``z_edges[i] <= z < z_edges[i + 1]`` (mm) and is made of ``materials[slab_material[i]]``;
deposits in slabs of a sensitive material are scored by the readout. The compiled helpers below are the
only geometry the transport loop knows: the distance to the next plane along a direction, and the
distance to the nearest plane in any direction (for range rejection).

The default stack is Geant4 example Par04 (CaloChallenge datasets 2 and 3): 90 pairs of 1.4 mm tungsten
followed by 0.3 mm silicon, tungsten first, front face at z = 0. :meth:`LayerStack.hgcal_like` is a CMS
CE-E-like stack: 26 layers of 4.5 mm lead, 3.0 mm copper and 0.3 mm silicon (7.8 mm, 1.014 X0 per layer;
202.8 mm, 26.36 X0 in all), read out in the silicon.

Example:
    >>> stack = LayerStack.par04()
    >>> stack.n_slabs, stack.depth, round(stack.radiation_length(), 3)
    (180, 153.0, 4.221)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np

from calogen.errors import CalogenError
from calogen.sim.materials import Material, material

__all__ = ["DetectorError", "LayerStack", "distance_to_boundary", "distance_to_nearest_boundary"]


class DetectorError(CalogenError):
    """An invalid layer stack."""


@dataclass(frozen=True)
class LayerStack:
    """A stack of planar slabs.

    Args:
        materials: the distinct materials used.
        slab_material: index into ``materials`` of every slab, front to back.
        thickness: thickness of every slab in mm.
        sensitive: names of the materials whose deposits are read out.
    """

    materials: tuple[Material, ...]
    slab_material: tuple[int, ...]
    thickness: tuple[float, ...]
    sensitive: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.slab_material or len(self.slab_material) != len(self.thickness):
            raise DetectorError(
                f"need one material index per slab thickness, got {len(self.slab_material)} and {len(self.thickness)}"
            )
        if min(self.thickness) <= 0:
            raise DetectorError(f"slab thicknesses must be > 0 mm, got {min(self.thickness)}")
        if not all(0 <= m < len(self.materials) for m in self.slab_material):
            raise DetectorError(f"slab material indices must lie in [0, {len(self.materials)})")
        names = [m.name for m in self.materials]
        unknown = sorted(set(self.sensitive) - set(names))
        if unknown:
            raise DetectorError(f"sensitive materials {unknown} are not in the stack; choose among {names}")

    @classmethod
    def par04(
        cls,
        n_pairs: int = 90,
        absorber: str = "W",
        absorber_mm: float = 1.4,
        sensitive: str = "Si",
        sensitive_mm: float = 0.3,
    ) -> LayerStack:
        """Alternating absorber/sensitive pairs, absorber first (defaults: Par04, 90 x (1.4 mm W + 0.3 mm Si))."""
        if n_pairs < 1:
            raise DetectorError(f"n_pairs must be >= 1, got {n_pairs}")
        return cls(
            materials=(material(absorber), material(sensitive)),
            slab_material=(0, 1) * n_pairs,
            thickness=(float(absorber_mm), float(sensitive_mm)) * n_pairs,
            sensitive=(sensitive,),
        )

    @classmethod
    def hgcal_like(cls, n_layers: int = 26, lead_mm: float = 4.5, copper_mm: float = 3.0, silicon_mm: float = 0.3) -> LayerStack:
        """CE-E-like sampling layers, front to back lead, copper, silicon (defaults: 26 x (4.5 + 3.0 + 0.3) mm).

        Readout layer i is the sampling layer at ``7.8 i <= z < 7.8 (i + 1)`` mm; its silicon is read out.
        """
        if n_layers < 1:
            raise DetectorError(f"n_layers must be >= 1, got {n_layers}")
        return cls(
            materials=(material("Pb"), material("Cu"), material("Si")),
            slab_material=(0, 1, 2) * n_layers,
            thickness=(float(lead_mm), float(copper_mm), float(silicon_mm)) * n_layers,
            sensitive=("Si",),
        )

    @property
    def n_slabs(self) -> int:
        """Number of slabs."""
        return len(self.thickness)

    @property
    def depth(self) -> float:
        """Total depth in mm."""
        return float(round(sum(self.thickness), 9))

    def z_edges(self) -> np.ndarray:
        """Slab boundaries ``(n_slabs + 1,)`` float64 mm, starting at 0."""
        return np.concatenate([[0.0], np.cumsum(self.thickness)]).astype(np.float64)

    def sensitive_mask(self) -> np.ndarray:
        """1 for materials that are read out, ``(n_materials,)`` int64."""
        return np.array([m.name in self.sensitive for m in self.materials], dtype=np.int64)

    def radiation_length(self) -> float:
        """Radiation length of the stack as a mixture, mm: 1/X0 = sum_i (t_i / T) / X0_i."""
        total = sum(self.thickness)
        inverse = sum(t / total / self.materials[m].radiation_length for m, t in zip(self.slab_material, self.thickness))
        return 1.0 / inverse

    def fractions(self) -> tuple[np.ndarray, np.ndarray]:
        """Thickness fractions ``(M,)`` of every material in the stack, and their mass fractions ``(M,)``."""
        thick = np.zeros(len(self.materials))
        for m, t in zip(self.slab_material, self.thickness):
            thick[m] += t
        mass = thick * np.array([m.density for m in self.materials])
        return thick / thick.sum(), mass / mass.sum()

    def critical_energy(self) -> float:
        """Critical energy of the stack as a mixture, MeV: ``Ec = X0 sum_i f_i Ec_i / X0_i`` (f thickness fractions)."""
        f, _ = self.fractions()
        return float(self.radiation_length() * sum(fi * m.critical_energy / m.radiation_length for fi, m in zip(f, self.materials)))

    def moliere_radius(self) -> float:
        """Moliere radius of the stack as a mixture, mm: ``1 / R_M = sum_i f_i / R_M,i`` (f thickness fractions)."""
        f, _ = self.fractions()
        return float(1.0 / sum(fi / m.moliere_radius for fi, m in zip(f, self.materials)))

    def z_eff(self) -> float:
        """Mass-weighted atomic number."""
        _, w = self.fractions()
        return float(sum(wi * m.z for wi, m in zip(w, self.materials)))


@nb.njit(cache=True, nogil=True)
def distance_to_boundary(z_edges: np.ndarray, slab: int, z: float, uz: float) -> float:
    """Path length (mm) from depth ``z`` in ``slab`` to its boundary along direction cosine ``uz`` (inf if uz = 0)."""
    if uz > 0.0:
        return max(z_edges[slab + 1] - z, 0.0) / uz
    if uz < 0.0:
        return max(z - z_edges[slab], 0.0) / -uz
    return math.inf


@nb.njit(cache=True, nogil=True)
def distance_to_nearest_boundary(z_edges: np.ndarray, slab: int, z: float) -> float:
    """Distance (mm) from depth ``z`` to the nearer face of ``slab``, whatever the direction."""
    return min(z - z_edges[slab], z_edges[slab + 1] - z)
