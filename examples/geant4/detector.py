"""The calorimeter: a barrel shaped after a calogen geometry, its Geant4 volumes and its cell readout.

The barrel is Par04's: a cylinder around the z axis with inner radius 800 mm and length 2 m, as deep as
the calogen geometry (153 mm, 45 layers of 3.4 mm for DS2). Its readout segments it into the geometry's
layers in depth (radius), ``cell_mm`` wide in azimuth and along z; a cell is ``(layer, phi, z)`` and its
flat index ``(layer * n_phi + phi) * n_z + z``. Showers are deposited into this readout, wherever the
particle entered, so it is the detector's view, not the shower's (that is :mod:`placement`'s mesh). Its
layer normal at a point is the radial direction there (:meth:`Barrel.normals`): a direction-conditioned
model's shower is generated at its incidence to that normal, with its layers parallel to the barrel's.
A deposit outside the barrel (the back of a shower crossing the outer radius, the end caps) is counted
in the nearest cell, so the energy balance of an event is exact; :class:`Readout` reports how much.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from types import ModuleType

import numpy as np

from calogen.geometry import Geometry

__all__ = ["ENVELOPE", "Barrel", "Readout", "construct"]

ENVELOPE = "calorimeter"
"""Name of the envelope's physical volume: e-, e+ and gamma that enter it become generated showers."""


@dataclass(frozen=True)
class Barrel:
    """A cylindrical calorimeter around the z axis whose depth is segmented like ``geometry``.

    Args:
        geometry: the calogen geometry whose layers (depth ranges, mm) the barrel's radial layers follow.
        inner_radius: mm.
        half_length: mm, along z.
        cell_mm: readout cell size in azimuth (at the inner radius) and along z.
    """

    geometry: Geometry
    inner_radius: float = 800.0
    half_length: float = 1000.0
    cell_mm: float = 5.0

    @cached_property
    def layer_bounds(self) -> np.ndarray:
        """Upper depth (mm from the inner radius) of every layer, ``(layers,)``."""
        return np.array([layer.z_range[1] for layer in self.geometry.layers])

    @property
    def depth(self) -> float:
        """Radial thickness in mm."""
        return float(self.layer_bounds[-1])

    @cached_property
    def n_phi(self) -> int:
        return max(1, round(2 * math.pi * self.inner_radius / self.cell_mm))

    @cached_property
    def n_z(self) -> int:
        return max(1, round(2 * self.half_length / self.cell_mm))

    @property
    def n_cells(self) -> int:
        return self.geometry.n_layers * self.n_phi * self.n_z

    def normals(self, points: np.ndarray) -> np.ndarray:
        """The layer normal at every point ``(N, 3)`` mm: the barrel's outward radial direction ``(x, y, 0) / rho``, ``(N, 3)``."""
        radial = np.asarray(points, dtype=np.float64) * np.array([1.0, 1.0, 0.0])
        return radial / np.hypot(radial[:, 0], radial[:, 1])[:, None]

    def cell_index(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat cell index of every point ``(H, 3)`` mm, and whether it lies outside the barrel, ``(H,)`` each."""
        rho = np.hypot(points[:, 0], points[:, 1])
        depth = rho - self.inner_radius
        z = points[:, 2]
        outside = (depth < 0) | (depth > self.depth) | (np.abs(z) > self.half_length)
        layer = np.minimum(np.searchsorted(self.layer_bounds, depth, side="right"), self.geometry.n_layers - 1)
        phi = np.floor((np.arctan2(points[:, 1], points[:, 0]) + math.pi) / (2 * math.pi) * self.n_phi).astype(np.int64)
        row = np.floor((z + self.half_length) / (2 * self.half_length) * self.n_z).astype(np.int64)
        index = (layer * self.n_phi + np.clip(phi, 0, self.n_phi - 1)) * self.n_z + np.clip(row, 0, self.n_z - 1)
        return index, outside

    def cell_centres(self, index: np.ndarray) -> np.ndarray:
        """Centre ``(H, 3)`` mm of every flat cell index."""
        layer, rest = np.divmod(np.asarray(index), self.n_phi * self.n_z)
        phi, row = np.divmod(rest, self.n_z)
        lower = np.concatenate([[0.0], self.layer_bounds[:-1]])
        rho = self.inner_radius + 0.5 * (lower[layer] + self.layer_bounds[layer])
        angle = (phi + 0.5) * 2 * math.pi / self.n_phi - math.pi
        z = (row + 0.5) * 2 * self.half_length / self.n_z - self.half_length
        return np.stack([rho * np.cos(angle), rho * np.sin(angle), z], axis=1)


@dataclass(frozen=True)
class Readout:
    """One event's deposits: the cells that were hit and their energies (MeV, float64), sorted by cell.

    Attributes:
        cells: flat cell indices ``(C,)``.
        energies: ``(C,)`` MeV.
        outside: energy (MeV) of deposits that fell outside the barrel and were put into its nearest cell.
    """

    cells: np.ndarray
    energies: np.ndarray
    outside: float

    @classmethod
    def collect(cls, barrel: Barrel, points: np.ndarray, energies: np.ndarray) -> Readout:
        """Sum deposits ``energies (H,)`` MeV at ``points (H, 3)`` mm into the barrel's cells."""
        index, outside = barrel.cell_index(points)
        cells, inverse = np.unique(index, return_inverse=True)
        sums = np.bincount(inverse, weights=energies.astype(np.float64), minlength=cells.size)
        return cls(cells, sums, float(energies[outside].sum(dtype=np.float64)))

    @property
    def total(self) -> float:
        return float(self.energies.sum())


def construct(g4: ModuleType, barrel: Barrel):  # type: ignore[no-untyped-def]
    """A ``G4VUserDetectorConstruction``: a vacuum world holding the barrel's tungsten envelope."""

    class Detector(g4.G4VUserDetectorConstruction):  # type: ignore[misc,name-defined]
        def Construct(self):  # type: ignore[no-untyped-def]  # noqa: N802 (Geant4's name)
            nist = g4.G4NistManager.Instance()
            half = 1.25 * max(barrel.inner_radius + barrel.depth, barrel.half_length)
            world_solid = g4.G4Box("world", half, half, half)
            self.world = g4.G4LogicalVolume(world_solid, nist.FindOrBuildMaterial("G4_Galactic"), "world")
            solid = g4.G4Tubs(ENVELOPE, barrel.inner_radius, barrel.inner_radius + barrel.depth, barrel.half_length, 0.0, 2 * math.pi)
            self.envelope = g4.G4LogicalVolume(solid, nist.FindOrBuildMaterial("G4_W"), ENVELOPE)
            g4.G4PVPlacement(None, g4.G4ThreeVector(), self.envelope, ENVELOPE, self.world, False, 0)
            return g4.G4PVPlacement(None, g4.G4ThreeVector(), self.world, "world", None, False, 0)

    return Detector()
