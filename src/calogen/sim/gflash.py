"""GFLASH: parametrised electromagnetic showers (Grindhammer & Peters) scored into any Geometry.

Every shower is drawn in three steps (hep-ex/0001020, the model behind Geant4's GFlash), from a
:class:`~calogen.sim.gflash_params.GflashParameters` set:

1. **Longitudinal** (:mod:`calogen.sim.gflash_longitudinal`): correlated log-normal depth of maximum T and shape
   alpha of a Gamma energy profile in depth, the deposited energy (Gamma-distributed, mean ``response(E) E``,
   variance ``c^2 E``) and, for photons, an exponential first-conversion depth.
2. **Spots** (:mod:`calogen.sim.gflash_spots`): the energy and spot profiles on depth steps of 0.2 X0, spots
   allotted to steps and weighted so that they follow the energy profile and sum to the deposited energy.
3. **Radial** (:mod:`calogen.sim.gflash_radial`): every spot's radius from the core + tail profile of its step,
   its azimuth uniform.

**Inclined showers** (:class:`~calogen.sim.readout.Incidence`): the longitudinal and radial profiles are
drawn along the shower axis exactly as above (depth t in X0 along the axis, radius in the plane normal to
it) and every spot is then carried into the detector frame, ``entry + s u + x e1 + y e2`` (u the direction,
e1, e2 normal to it), and scored where it lands. This treats the stack as a homogeneous medium seen along
the axis: the sampling corrections (Fs, e_hat) keep their normal-incidence values although the axis
crosses 1 / cos theta more material per layer, and a spot's depth in X0 is its distance along the axis.

At normal incidence into a cylindrical readout :meth:`GflashSimulation.simulate` scores the spots in one
compiled pass from their polar coordinates (:func:`~calogen.sim.gflash_spots.score_spots`);
:meth:`GflashSimulation.spots` places the same spots (same random numbers) in Cartesian coordinates of the
detector frame, and scoring those with :func:`~calogen.sim.readout.score_points` (or, at normal incidence,
:func:`~calogen.sim.readout.score_deposits`) gives the same voxels. Other incidences and cell readouts always
take the Cartesian path. Voxel energies are in CaloChallenge units (deposit / sampling fraction, so about E),
and voxels below ``geometry.threshold`` are zeroed.

Reference: G. Grindhammer and S. Peters, "The parameterized simulation of electromagnetic showers in
homogeneous and sampling calorimeters", hep-ex/0001020.

Example:
    >>> from calogen.geometry import Geometry
    >>> sim = GflashSimulation(Geometry.builtin("ds2"))
    >>> sim.sample([10_000.0, 50_000.0], seed=1).shape
    (2, 6480)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from calogen.cell_geometry import CellGeometry
from calogen.generator import derive_seed
from calogen.geometry import Geometry
from calogen.sim.gflash_longitudinal import PHOTON_CONVERSION_X0, longitudinal_parameters, mean_log_shape, n_spots, origin, response
from calogen.sim.gflash_params import GflashParameterError, GflashParameters, default_parameters
from calogen.sim.gflash_spots import Spots, depth_steps, place_spots, score_spots, spot_weights
from calogen.sim.readout import Incidence, readout_arrays, score_points

__all__ = ["GflashSimulation", "check_energies"]

_GEV = 1000.0
_PARTICLES = {"e-": "e-", "electron": "e-", "e+": "e+", "positron": "e+", "gamma": "gamma", "photon": "gamma"}


@dataclass(frozen=True)
class _Shower:
    """One drawn shower: deposited energy (MeV), photon start (X0) and the arguments of :func:`~calogen.sim.gflash_spots.place_spots`."""

    deposited: float
    start: float
    kernel_args: tuple[Any, ...]


def _particle(name: str) -> str:
    try:
        return _PARTICLES[name]
    except KeyError:
        raise GflashParameterError(
            f"GFLASH simulates electromagnetic showers only; particle {name!r} is not one of {sorted(_PARTICLES)}"
        ) from None


def check_energies(energies: np.ndarray | list[float]) -> np.ndarray:
    """Incident energies as float64 ``(N,)`` MeV; raises :class:`GflashParameterError` unless finite and > 0."""
    e = np.asarray(energies, dtype=np.float64)
    if e.ndim == 2 and e.shape[1] == 1:
        e = e[:, 0]
    if e.ndim != 1:
        raise GflashParameterError(f"energies must have shape (N,) or (N, 1), got {e.shape}")
    bad = ~(np.isfinite(e) & (e > 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise GflashParameterError(f"incident energies must be finite and > 0 MeV; entry {i} is {float(e[i])!r}")
    return e


class GflashSimulation:
    """A :class:`~calogen.generator.Generator` drawing GFLASH showers scored into ``geometry``.

    Shower ``i`` of :meth:`simulate` uses its own random stream seeded by
    ``derive_seed(seed, first_index + i)``, so the output does not depend on how the work is split.

    Args:
        geometry: the readout to score into (a cylindrical Geometry or a CellGeometry).
        particle: ``e-``/``electron``, ``e+``/``positron`` or ``gamma``/``photon`` (photons start after an
            exponential conversion depth of mean 9/7 X0).
        params: the model parameters; when omitted (:func:`~calogen.sim.gflash_params.default_parameters`),
            for cylindrical readouts the packaged ``ds2-electron`` set calibrated to the detailed MC on the Par04
            detector (the detector every cylindrical built-in models), for cell readouts the packaged
            ``hgcal-like-gamma`` (photons) or ``hgcal-like-electron`` (e+-) set calibrated to the detailed MC of
            that particle on the HGCal-like stack.
            ``GflashParameters.default()`` gives the published, uncalibrated Par04 set.
        incidence: direction and entry point of the primary; the readout follows its trajectory.
    """

    def __init__(
        self,
        geometry: Geometry | CellGeometry,
        particle: str = "e-",
        params: GflashParameters | None = None,
        *,
        incidence: Incidence = Incidence(),
    ) -> None:
        if not isinstance(incidence, Incidence):
            raise GflashParameterError(f"incidence must be an Incidence, got {type(incidence).__name__}")
        self.geometry = geometry
        self.particle = _particle(particle)
        self.incidence = incidence
        if params is None:
            params = default_parameters(geometry.kind, self.particle)
        self.params = params
        self._polar = incidence.is_normal and geometry.kind == "cylindrical"
        self._readout = readout_arrays(geometry, incidence)

    def spots(self, energy: float, rng: np.random.Generator) -> Spots:
        """Draw the spots of one shower of incident energy ``energy`` MeV from ``rng``.

        Draw order: two normals (T, alpha), the deposited energy, the photon conversion depth (photons
        only), the spot allocation offset, then three uniforms per spot.
        """
        energies = check_energies([energy])
        t_max, alpha = longitudinal_parameters(energies, rng.standard_normal((1, 2)), self.params)
        mean_alpha = np.exp(mean_log_shape(energies, self.params)[1])
        shower = self._draw(float(energies[0]), float(t_max[0]), float(alpha[0]), float(mean_alpha[0]), rng)
        x, y, z, e = place_spots(*shower.kernel_args)
        if not self.incidence.is_normal:
            x, y, z = self.incidence.to_frame(x, y, z)
        return Spots(x, y, z, e, shower.deposited, float(t_max[0]), float(alpha[0]), shower.start)

    def _draw(self, energy: float, t_max: float, alpha: float, mean_alpha: float, rng: np.random.Generator) -> _Shower:
        """The rest of a shower whose normals have been drawn from ``rng`` and turned into ``t_max``, ``alpha``."""
        p = self.params
        var_per_mev = p.sampling_term**2 * _GEV  # Var(E_dep) = c^2 E, both in MeV
        deposited = response(energy, p) * float(rng.gamma(energy / var_per_mev, var_per_mev))
        start = float(rng.exponential(PHOTON_CONVERSION_X0)) if self.particle == "gamma" else 0.0
        steps = depth_steps(energy, t_max, alpha, p, mean_alpha)
        n = n_spots(energy, p)
        counts, per_spot = spot_weights(steps.energy, steps.spots, n, float(rng.random()), deposited)
        u = rng.random((3, n))
        args = (counts, per_spot, steps.radial, u, start - origin(energy, p), p.x0_mm, p.moliere_radius_mm)
        return _Shower(deposited, start, args)

    def simulate(self, energies: np.ndarray | list[float], *, seed: int, first_index: int = 0) -> np.ndarray:
        """Showers ``(N, voxels)`` float32 MeV for incident energies ``(N,)`` MeV; shower i is seeded by index ``first_index + i``."""
        energies = check_energies(energies)
        out = np.zeros((energies.size, self.geometry.n_voxels), dtype=np.float32)
        row = np.zeros(self.geometry.n_voxels, dtype=np.float64)
        rngs = [np.random.default_rng(derive_seed(seed, first_index + i)) for i in range(energies.size)]
        normals = np.array([rng.standard_normal(2) for rng in rngs]).reshape(-1, 2)
        t_max, alpha = longitudinal_parameters(energies, normals, self.params)
        mean_alpha = np.exp(mean_log_shape(energies, self.params)[1])
        for i, rng in enumerate(rngs):
            shower = self._draw(float(energies[i]), float(t_max[i]), float(alpha[i]), float(mean_alpha[i]), rng)
            row[:] = 0.0
            self._score(shower, row)
            out[i] = row
        out[out < getattr(self.geometry, "threshold", 0.0)] = 0.0
        return out

    def _score(self, shower: _Shower, row: np.ndarray) -> None:
        """Add the spots of ``shower`` to ``row``: polar scoring at normal incidence into cylinders, else Cartesian."""
        ro = self._readout
        if self._polar:
            score_spots(*shower.kernel_args, ro.z_lo, ro.z_hi, ro.r_edges, ro.n_r, ro.n_alpha, ro.offsets, row)
            return
        x, y, z, e = place_spots(*shower.kernel_args)
        score_points(ro, *self.incidence.to_frame(x, y, z), e, row)

    def sample(self, energies: np.ndarray | list[float], *, seed: int, batch_size: int | None = None) -> np.ndarray:
        """Generator interface: :meth:`simulate` in batches of ``batch_size`` (same result for any batch size)."""
        energies = check_energies(energies)
        if batch_size is not None and batch_size < 1:
            raise GflashParameterError(f"batch_size must be >= 1, got {batch_size}")
        step = max(energies.size, 1) if batch_size is None else batch_size
        parts = [self.simulate(energies[i : i + step], seed=seed, first_index=i) for i in range(0, energies.size, step)]
        return np.concatenate(parts) if parts else np.zeros((0, self.geometry.n_voxels), np.float32)
