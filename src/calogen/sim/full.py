"""The detailed simulation as a :class:`~calogen.generator.Generator`: showers of the Par04 calorimeter.

:class:`FullSimulation` runs the compiled cascade of :mod:`calogen.sim.cascade` for a layer stack (by
default 90 x (1.4 mm W + 0.3 mm Si)) and scores the silicon deposits into any readout geometry, in the
CaloChallenge convention: deposits divided by the 3.3% sampling fraction, then voxels below
``geometry.threshold`` set to zero. Shower ``i`` of a call with ``first_index=k`` is seeded from
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

import math
from dataclasses import dataclass

import numpy as np

from calogen.errors import CalogenError
from calogen.generator import derive_seed
from calogen.geometry import Geometry
from calogen.sim.cascade import ELECTRON, PHOTON, POSITRON, CascadeConfig, DetectorArrays, run_showers
from calogen.sim.detector import LayerStack
from calogen.sim.physics.annihilation import ANNIHILATION_ENERGY
from calogen.sim.physics.tables import build_tables
from calogen.sim.readout import CALOCHALLENGE_SAMPLING_SCALE, ReadoutTables

__all__ = ["FullSimulation", "SimulationError", "SimulationResult"]

_PARTICLES = {
    "e-": ELECTRON, "electron": ELECTRON,
    "e+": POSITRON, "positron": POSITRON,
    "gamma": PHOTON, "photon": PHOTON,
}  # fmt: skip
_MAX_ENERGY = 1e7
"""Largest incident energy (MeV); the tables reach 100 TeV."""


class SimulationError(CalogenError):
    """An invalid particle, energy or incidence for the detailed simulation."""


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
        incident_angle: polar angle of the primary to the z axis, rad, in the x-z plane (|angle| < pi/2).
        entry_point: (x, y) of the primary on the front face, mm.
        stack: the layer stack; default :meth:`LayerStack.par04`.
        scale: factor applied to sensitive deposits; default 1/0.033 (CaloChallenge).
    """

    def __init__(
        self,
        geometry: Geometry,
        particle: str = "e-",
        config: CascadeConfig = CascadeConfig(),
        *,
        incident_angle: float = 0.0,
        entry_point: tuple[float, float] = (0.0, 0.0),
        stack: LayerStack | None = None,
        scale: float = CALOCHALLENGE_SAMPLING_SCALE,
    ) -> None:
        key = str(particle).strip().lower()
        if key not in _PARTICLES:
            raise SimulationError(f"unknown particle {particle!r}; choose one of e-, e+, gamma")
        if not (math.isfinite(incident_angle) and abs(incident_angle) < math.pi / 2):
            raise SimulationError(f"incident_angle must lie in (-pi/2, pi/2) rad, got {incident_angle!r}")
        if len(entry_point) != 2 or not all(math.isfinite(v) for v in entry_point):
            raise SimulationError(f"entry_point must be two finite numbers (x, y) in mm, got {entry_point!r}")
        self.geometry = geometry
        self.particle = key
        self.config = config
        self.stack = LayerStack.par04() if stack is None else stack
        self._kind = _PARTICLES[key]
        self._scale = float(scale)
        self._start = np.array(
            [entry_point[0], entry_point[1], 0.0, math.sin(incident_angle), 0.0, math.cos(incident_angle)], dtype=np.float64
        )
        self._tables = build_tables(self.stack.materials, delta_cut=config.delta_cut, brems_cut=config.brems_cut)
        names = [m.name for m in self.stack.materials]
        self._detector = DetectorArrays(
            z_edges=self.stack.z_edges(),
            slab_material=np.asarray(self.stack.slab_material, dtype=np.int64),
            sensitive=self.stack.sensitive_mask(),
            fluctuate=np.array([name in config.fluctuations for name in names], dtype=np.int64),
        )
        ro = ReadoutTables.from_geometry(geometry)
        self._readout = (ro.z_lo, ro.z_hi, ro.r_edges, ro.n_r, ro.n_alpha, ro.offsets)

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
        showers[showers < self.geometry.threshold] = 0.0
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
