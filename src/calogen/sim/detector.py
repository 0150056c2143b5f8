"""The detector of the detailed simulation: planar slabs along z, unbounded transversely.

Slab ``i`` covers ``z_edges[i] <= z < z_edges[i + 1]`` (mm) and is made of ``materials[slab_material[i]]``;
deposits in slabs of a sensitive material are scored by the readout. The compiled helpers below are the
only geometry the transport loop knows: the distance to the next plane along a direction, and the
distance to the nearest plane in any direction (for range rejection).

The default stack is Geant4 example Par04 (CaloChallenge datasets 2 and 3): 90 pairs of 1.4 mm tungsten
followed by 0.3 mm silicon, tungsten first, front face at z = 0.

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
