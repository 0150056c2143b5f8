"""The detailed simulation as a :class:`~calogen.generator.Generator`: showers of the Par04 or HGCal-like calorimeter.

:class:`FullSimulation` runs the compiled cascade of :mod:`calogen.sim.cascade` for a layer stack (by
default 90 x (1.4 mm W + 0.3 mm Si) for cylindrical readouts, :meth:`LayerStack.hgcal_like` for cell
readouts) and scores the silicon deposits into the readout geometry, centred on the primary's trajectory
(:class:`~calogen.sim.readout.Incidence`), divided by the stack's sampling fraction (CaloChallenge
convention, 3.3% for Par04; :data:`HGCAL_SAMPLING_FRACTION` for cells), then voxels below
``geometry.threshold`` (cell geometries: none) set to zero. Shower ``i`` of a call with ``first_index=k`` is seeded from
``derive_seed(seed, k + i)``, so any split of a run into calls, batches or processes gives the same bytes.

Energy accounting: the incident energy is kinetic. A positron brings 2 m_e c^2 more when it annihilates
(its own rest energy and an atomic electron's), so the *available* energy is T + 2 m_e c^2 for e+ and T
otherwise, and per shower ``sum(material_deposits) + leaked == available_energy`` to rounding. The
``below_cut`` energy (particles stopped by a tracking cut or range rejection, deposited on the spot) is
part of the material deposits, not an extra term.

Example:
    >>> from calogen.geometry import Geometry
    >>> sim = FullSimulation(Geometry.builtin("tiny"), "e-")
    >>> sim.sample([1000.0], seed=1).shape
    (1, 120)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calogen.cell_geometry import CellGeometry
from calogen.errors import CalogenError
from calogen.generator import derive_seed
from calogen.geometry import Geometry
from calogen.sim.cascade import (
    ELECTRON,
    PHOTON,
    POSITRON,
    CascadeConfig,
    DetectorArrays,
    run_showers,
)
from calogen.sim.detector import LayerStack
from calogen.sim.physics.annihilation import ANNIHILATION_ENERGY
from calogen.sim.physics.tables import build_tables
from calogen.sim.readout import CALOCHALLENGE_SAMPLING_SCALE, Incidence, readout_arrays

__all__ = ["HGCAL_SAMPLING_FRACTION", "FullSimulation", "SimulationError", "SimulationResult", "default_scale", "default_stack"]

HGCAL_SAMPLING_FRACTION = 0.0095
"""Silicon fraction of the deposits of :meth:`LayerStack.hgcal_like` (measured, docs/geometries.md); cell
readouts divide the silicon signal by it."""

_PARTICLES = {
    "e-": ELECTRON, "electron": ELECTRON,
    "e+": POSITRON, "positron": POSITRON,
    "gamma": PHOTON, "photon": PHOTON,
}  # fmt: skip
_MAX_ENERGY = 1e7
"""Largest incident energy (MeV); the tables reach 100 TeV."""


class SimulationError(CalogenError):
    """An invalid particle, energy or incidence for the detailed simulation."""


def default_stack(geometry: Geometry | CellGeometry) -> LayerStack:
    """The detector a readout belongs to: HGCal-like for cell geometries, Par04 otherwise."""
    return LayerStack.hgcal_like() if geometry.kind == "cells" else LayerStack.par04()


def default_scale(geometry: Geometry | CellGeometry) -> float:
    """Factor on silicon deposits: one over the sampling fraction of :func:`default_stack`."""
    return 1.0 / HGCAL_SAMPLING_FRACTION if geometry.kind == "cells" else CALOCHALLENGE_SAMPLING_SCALE


@dataclass(frozen=True)
class SimulationResult:
    """Showers with their energy accounting; all energies in MeV.

    Attributes:
        showers: ``(N, V)`` float32 voxel energies (scaled, thresholded).
        incident_energy: ``(N,)`` kinetic energy of the primaries.
        available_energy: ``(N,)`` incident energy plus 2 m_e c^2 for positrons.
        material_names: names of the stack materials, the columns of ``material_deposits``.
        material_deposits: ``(N, M)`` energy deposited in every material (cut energies included).
        leaked: ``(N,)`` energy carried out of the front or back of the stack.
        below_cut: ``(N,)`` the part of the deposits made by particles stopped at a cut.
        outside_readout: ``(N,)`` unscaled sensitive-material deposits outside every voxel.
    """

    showers: np.ndarray
    incident_energy: np.ndarray
    available_energy: np.ndarray
    material_names: tuple[str, ...]
    material_deposits: np.ndarray
    leaked: np.ndarray
    below_cut: np.ndarray
    outside_readout: np.ndarray

    def deposit(self, name: str) -> np.ndarray:
        """``(N,)`` energy deposited in material ``name`` (e.g. ``"Si"``), readout or not."""
        if name not in self.material_names:
            raise SimulationError(f"no material {name!r} in the stack; choose one of {', '.join(self.material_names)}")
        return self.material_deposits[:, self.material_names.index(name)]

    def balance(self) -> np.ndarray:
        """``(N,)`` relative energy imbalance (deposits + leaked - available) / available."""
        return (self.material_deposits.sum(axis=1) + self.leaked - self.available_energy) / self.available_energy


class FullSimulation:
    """Creates the detailed (condensed-history) electromagnetic simulation of a sampling calorimeter.

    Args:
        geometry: readout geometry the sensitive deposits are scored into.
        particle: ``e-``, ``e+`` or ``gamma`` (or ``electron``, ``positron``, ``photon``).
        config: cuts and step settings.
        incidence: direction and entry point of the primary; the readout follows its trajectory.
        stack: the layer stack; default :func:`default_stack`.
        scale: factor applied to sensitive deposits; default :func:`default_scale`.
    """

    def __init__(
        self,
        geometry: Geometry | CellGeometry,
        particle: str = "e-",
        config: CascadeConfig = CascadeConfig(),
        *,
        incidence: Incidence = Incidence(),
        stack: LayerStack | None = None,
        scale: float | None = None,
    ) -> None:
        key = str(particle).strip().lower()
        if key not in _PARTICLES:
            raise SimulationError(f"unknown particle {particle!r}; choose one of e-, e+, gamma")
        if not isinstance(incidence, Incidence):
            raise SimulationError(f"incidence must be an Incidence, got {type(incidence).__name__}")
        self.geometry = geometry
        self.particle = key
        self.config = config
        self.incidence = incidence
        self.stack = default_stack(geometry) if stack is None else stack
        self._kind = _PARTICLES[key]
        self._scale = float(default_scale(geometry) if scale is None else scale)
        self._start = np.array([*incidence.entry, 0.0, *incidence.direction()], dtype=np.float64)
        self._tables = build_tables(self.stack.materials, delta_cut=config.delta_cut, brems_cut=config.brems_cut)
        names = [m.name for m in self.stack.materials]
        self._detector = DetectorArrays(
            z_edges=self.stack.z_edges(),
            slab_material=np.asarray(self.stack.slab_material, dtype=np.int64),
            sensitive=self.stack.sensitive_mask(),
            fluctuate=np.array([name in config.fluctuations for name in names], dtype=np.int64),
        )
        self._readout = readout_arrays(geometry, incidence)

    def simulate(self, energies: np.ndarray, *, seed: int, first_index: int = 0) -> SimulationResult:
        """Showers and energy accounting for kinetic ``energies`` ``(N,)`` or ``(N, 1)`` MeV.

        Shower i is seeded from ``derive_seed(seed, first_index + i)``.
        """
        kinetic = np.ascontiguousarray(np.asarray(energies, dtype=np.float64).reshape(-1))
        bad = kinetic[~(np.isfinite(kinetic) & (kinetic > 0) & (kinetic <= _MAX_ENERGY))]
        if bad.size:
            raise SimulationError(f"incident energies must lie in (0, {_MAX_ENERGY:g}] MeV, got {bad[0]!r}")
        if first_index < 0:
            raise SimulationError(f"first_index must be >= 0, got {first_index}")
        seeds = np.array([derive_seed(seed, first_index + i) for i in range(kinetic.size)], dtype=np.int64)
        showers = np.zeros((kinetic.size, self.geometry.n_voxels), dtype=np.float64)
        n_materials = len(self.stack.materials)
        accounts = np.zeros((kinetic.size, n_materials + 3), dtype=np.float64)
        run_showers(
            kinetic, seeds, np.int64(self._kind), self._start, self._tables, self._detector, self._readout,
            self.config.cuts(), np.int64(self.config.stack_capacity), self._scale, showers, accounts,
        )  # fmt: skip
        showers[showers < getattr(self.geometry, "threshold", 0.0)] = 0.0
        extra = ANNIHILATION_ENERGY if self._kind == POSITRON else 0.0
        return SimulationResult(
            showers=showers.astype(np.float32),
            incident_energy=kinetic,
            available_energy=kinetic + extra,
            material_names=tuple(m.name for m in self.stack.materials),
            material_deposits=accounts[:, :n_materials],
            leaked=accounts[:, n_materials],
            below_cut=accounts[:, n_materials + 1],
            outside_readout=accounts[:, n_materials + 2],
        )

    def sample(self, energies: np.ndarray, *, seed: int, batch_size: int | None = None) -> np.ndarray:
        """Showers ``(N, V)`` float32 MeV for kinetic ``energies``; identical for any ``batch_size``."""
        kinetic = np.asarray(energies, dtype=np.float64).reshape(-1)
        step = kinetic.size if not batch_size else int(batch_size)
        if step < 1 and kinetic.size:
            raise SimulationError(f"batch_size must be >= 1, got {batch_size}")
        out = np.empty((kinetic.size, self.geometry.n_voxels), dtype=np.float32)
        for start in range(0, kinetic.size, max(step, 1)):
            out[start : start + step] = self.simulate(kinetic[start : start + step], seed=seed, first_index=start).showers
        return out
