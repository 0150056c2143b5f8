"""Calibrating GFLASH to reference showers (usually the detailed Monte Carlo).

:func:`calibrate_gflash` tunes a :class:`~calogen.sim.gflash_params.GflashParameters` in four stages, each on
the reference's incident-energy groups (one group per distinct energy, or up to four log-energy
quantile groups when energies are continuous):

1. ``depth_offset``, ``shape_offset``, ``origin_offset``, ``profile_tilt`` (and the slopes in ln E of the
   depth, shape and origin when the groups span more than a factor 1.6 in energy): least squares (relative
   deviations, layers below 1% damped) between the reference mean longitudinal profile (energy fraction per
   layer) and the model's *expected* profile: Gamma CDF differences at the layer edges for GFLASH showers
   drawn with fixed quasi-random (Halton) normals, so the objective is smooth, times every layer's radial
   containment (the fraction of its energy inside the last radial edge; it falls with depth as the tail
   radius grows, and is held at the previous parameters' values during the fit).
2. ``core_radius_scale``, ``tail_radius_scale``, ``core_weight_offset`` (and ``radius_slope`` with two or
   more energy groups): the same for the mean radial profile (energy fraction per radial bin), using the
   analytic radial CDF ``F(r) = p r^2 / (r^2 + R_C^2) + (1 - p) r^2 / (r^2 + R_T^2)`` of every step.
   Stages 1 and 2 run twice, so that the longitudinal fit sees the containment of the fitted radial shape.
3. ``energy_scale`` (and ``energy_slope``), ``sampling_term``: mean and spread of the total energy over
   the expected contained fraction.
4. ``spot_scale`` (and ``spot_exponent`` when there are two or more energy groups): secant search per
   group for the spot count whose simulated mean number of hit voxels matches the reference, then a
   power-law fit ``N = scale 10.3 / c (E / GeV)^exponent`` through the per-group counts.

The geometry's non-empty layers must share their radial bins (DS2 and DS3 do). On a cell readout
(:class:`~calogen.cell_geometry.CellGeometry` of hexagonal lattices, such as ``hgcal-like``) the radial profile
is the energy per hexagonal ring, and the expected profiles integrate GFLASH's radial density over thin shells
mapped to rings (:mod:`calogen.sim.gflash_cells`). Photon references are fitted with the photon's exponential
first-conversion depth (mean 9/7 X0) drawn quasi-randomly with the other normals. An inclined reference
(``incidence``) is fitted along the shower axis, layer depths scaled by 1 / cos theta; on cells its shells
follow the trajectory's crossing of every layer and its projection onto the layer plane.

Example:
    >>> from calogen.geometry import Geometry
    >>> from calogen.io import ShowerData
    >>> from calogen.sim.gflash import GflashSimulation
    >>> from calogen.sim.gflash_params import GflashParameters
    >>> g = Geometry.builtin("ds2")
    >>> truth = GflashParameters.default().with_(depth_offset=0.7)
    >>> e = np.repeat([10_000.0, 50_000.0], 200).reshape(-1, 1)
    >>> ref = ShowerData(e, GflashSimulation(g, params=truth).sample(e, seed=1))
    >>> fit = calibrate_gflash(ref, g, n_model=100, n_hits=60)
    >>> abs(fit.depth_offset - 0.7) < 0.2
    True
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy.special import ndtri
from scipy.stats import qmc

from calogen.cell_geometry import CellGeometry
from calogen.geometry import Geometry
from calogen.io import ShowerData, read_showers
from calogen.sim.expected_profiles import Expectation
from calogen.sim.gflash import GflashSimulation
from calogen.sim.gflash_longitudinal import PHOTON_CONVERSION_X0, n_spots
from calogen.sim.gflash_params import GflashParameters, hgcal_like_parameters
from calogen.sim.readout import Incidence
from calogen.sim.shower_profiles import (
    CalibrationError,
    energy_groups,
    hit_counts,
    mean_fractions,
    radial_energies,
)

__all__ = ["CalibrationError", "EnergyGroup", "calibrate_gflash"]

log = logging.getLogger(__name__)

_ROUNDS = 2
_PARTICLES = {"e-": "e-", "electron": "e-", "e+": "e+", "positron": "e+", "gamma": "gamma", "photon": "gamma"}


@dataclass(frozen=True)
class EnergyGroup:
    """Reference summaries of one energy group and the model showers that stand for it."""

    energies: np.ndarray  # (n_model,) energies of the model showers, MeV
    normals: np.ndarray  # (n_model, 2) fixed quasi-random normals for T and alpha
    starts: np.ndarray  # (n_model,) photon first-conversion depths, X0 (0 for e+-)
    longitudinal: np.ndarray  # (L,) reference energy fraction per layer
    radial: np.ndarray  # (n_r,) reference energy fraction per radial bin
    response: float  # mean total / E
    resolution: float  # relative spread of the total times sqrt(E / GeV)
    hits: float  # mean number of hit voxels
    hit_energies: np.ndarray  # (n_hits,) energies for hit-count simulations


def _summarise(
    data: ShowerData, geometry: Geometry | CellGeometry, photons: bool, n_model: int, n_hits: int, rng: np.random.Generator
) -> list[EnergyGroup]:
    energies = data.energies.reshape(-1).astype(np.float64)
    totals = data.showers.sum(axis=1, dtype=np.float64)
    groups = []
    for idx in energy_groups(energies):
        e, ratio = energies[idx], totals[idx] / energies[idx]
        u = np.clip(qmc.Halton(d=3 if photons else 2, seed=rng).random(n_model), 1e-9, 1 - 1e-9)
        groups.append(
            EnergyGroup(
                energies=rng.choice(e, n_model),
                normals=ndtri(u[:, :2]),
                starts=-np.log1p(-u[:, 2]) * PHOTON_CONVERSION_X0 if photons else np.zeros(n_model),
                longitudinal=mean_fractions(geometry.layer_energies(data.showers[idx])),
                radial=mean_fractions(radial_energies(data.showers[idx], geometry)),
                response=float(ratio.mean()),
                resolution=float(np.sqrt(np.mean((ratio / ratio.mean() - 1.0) ** 2 * e / 1000.0))),
                hits=float(hit_counts(data.showers[idx], geometry).mean()),
                hit_energies=rng.choice(e, n_hits),
            )
        )
    return groups


def _chi2(model: np.ndarray, ref: np.ndarray) -> float:
    """Sum of squared relative deviations between two fraction vectors (absolute ones over 1% below 1%)."""
    return float(np.sum((model - ref) ** 2 / np.maximum(ref, 0.01) ** 2))



def _nelder_mead(cost: Callable[[np.ndarray], float], x0: list[float], steps: list[float]) -> optimize.OptimizeResult:
    """Minimise ``cost`` from ``x0`` with a Nelder-Mead simplex spanning ``steps`` along each axis."""
    simplex = np.vstack([x0, np.asarray(x0) + np.diag(steps)])
    return optimize.minimize(cost, x0, method="Nelder-Mead",
                             options={"initial_simplex": simplex, "xatol": 1e-4, "fatol": 1e-12, "maxiter": 1000})  # fmt: skip


def _log_energies(groups: list[EnergyGroup]) -> np.ndarray:
    """ln(E / GeV) at the (geometric) centre of every group."""
    return np.array([np.mean(np.log(g.energies / 1000.0)) for g in groups])


def _fit_longitudinal(groups: list[EnergyGroup], model: Expectation, params: GflashParameters) -> GflashParameters:
    """Depth, shape and origin offsets; depth and shape also get slopes in ln E when the groups span > 0.5 in ln E.

    The expected layer profiles include the radial containment of ``params`` per layer (held fixed here).
    """
    with_slopes = np.ptp(_log_energies(groups)) > 0.5
    contained = [model.containment(g, params) for g in groups]

    def trial(x: np.ndarray) -> GflashParameters:
        slopes = {"depth_slope": float(x[4]), "shape_slope": float(x[5]), "origin_slope": float(x[6])} if with_slopes else {}
        return params.with_(depth_offset=float(x[0]), shape_offset=float(x[1]), origin_offset=float(x[2]),
                            profile_tilt=float(np.clip(x[3], -5.0, 5.0)), **slopes)  # fmt: skip

    def cost(x: np.ndarray) -> float:
        t = trial(x)
        return sum(_chi2(model.longitudinal(g, t, c), g.longitudinal) for g, c in zip(groups, contained, strict=True))

    x0 = [params.depth_offset, params.shape_offset, params.origin_offset, params.profile_tilt]
    steps = [0.5, 0.5, 0.3, 0.5]
    if with_slopes:
        x0, steps = x0 + [params.depth_slope, params.shape_slope, params.origin_slope], steps + [0.1, 0.1, 0.1]
    fitted = trial(_nelder_mead(cost, x0, steps).x)
    log.info("longitudinal fit: depth %.3f%+.3f ln(E/GeV) X0, shape %.3f%+.3f ln(E/GeV), origin %.3f%+.3f ln(E/GeV) X0, "
             "tilt %.3f / X0", fitted.depth_offset, fitted.depth_slope, fitted.shape_offset, fitted.shape_slope,
             fitted.origin_offset, fitted.origin_slope, fitted.profile_tilt)  # fmt: skip
    return fitted


def _fit_radial(groups: list[EnergyGroup], model: Expectation, params: GflashParameters) -> tuple[GflashParameters, list[float]]:
    """Core and tail radius scales and core weight offset; the radii also get a power of E when the groups span > 0.5 in ln E."""
    setups = [model.radial_setup(g, params) for g in groups]
    with_slope = np.ptp(_log_energies(groups)) > 0.5

    def trial(x: np.ndarray) -> GflashParameters:
        slope = {"radius_slope": float(x[3])} if with_slope else {}
        return params.with_(core_radius_scale=math.exp(x[0]), tail_radius_scale=math.exp(x[1]), core_weight_offset=float(x[2]), **slope)

    def cost(x: np.ndarray) -> float:
        t = trial(x)
        return sum(_chi2(model.radial(s, t)[0], g.radial) for s, g in zip(setups, groups, strict=True))

    x0 = [math.log(params.core_radius_scale), math.log(params.tail_radius_scale), params.core_weight_offset]
    steps = [0.2, 0.2, 0.05]
    if with_slope:
        x0, steps = x0 + [params.radius_slope], steps + [0.05]
    res = _nelder_mead(cost, x0, steps)
    fitted = trial(res.x)
    log.info("radial fit: core x%.3f, tail x%.3f, radii x(E/GeV)^%.3f, core weight %+.3f (chi2 %.3g)",
             fitted.core_radius_scale, fitted.tail_radius_scale, fitted.radius_slope, fitted.core_weight_offset, res.fun)  # fmt: skip
    contained = [model.radial(s, fitted)[1] / float(np.sum(g.energies)) for s, g in zip(setups, groups, strict=True)]
    return fitted, contained


def _fit_spots(
    groups: list[EnergyGroup], geometry: Geometry | CellGeometry, params: GflashParameters, particle: str, incidence: Incidence, seed: int
) -> GflashParameters:
    """Per group, the spot-count factor that reproduces the reference hit count; then a power law through them."""
    log_e, log_n = [], []
    for k, g in enumerate(groups):

        def log_hits(log_m: float, g: EnergyGroup = g, k: int = k) -> float:
            trial = params.with_(spot_scale=params.spot_scale * math.exp(log_m))
            sim = GflashSimulation(geometry, particle, trial, incidence=incidence)
            return math.log(hit_counts(sim.simulate(g.hit_energies, seed=seed + k), geometry).mean())

        target = math.log(g.hits)
        x0, f0 = 0.0, log_hits(0.0)
        x1 = (target - f0) / 0.7  # hits grow roughly as N^0.7
        for _ in range(8):
            f1 = log_hits(x1)
            if abs(f1 - target) < 0.005 or f1 == f0:
                break
            x0, f0, x1 = x1, f1, x1 + (target - f1) * (x1 - x0) / (f1 - f0)
        e_mid = float(np.exp(np.mean(np.log(g.hit_energies))))
        log_e.append(math.log(e_mid / 1000.0))
        log_n.append(math.log(n_spots(e_mid, params)) + x1)
    base = math.log(10.3 / params.sampling_term)
    if len(groups) >= 2 and np.ptp(log_e) > 0.5:
        exponent, intercept = np.polyfit(log_e, log_n, 1)
    else:
        exponent = params.spot_exponent
        intercept = float(np.mean(np.asarray(log_n) - exponent * np.asarray(log_e)))
    fitted = params.with_(spot_scale=math.exp(intercept - base), spot_exponent=float(exponent))
    log.info("spot fit: scale %.3f, exponent %.3f", fitted.spot_scale, fitted.spot_exponent)
    return fitted


def calibrate_gflash(
    reference: ShowerData | str | os.PathLike[str],
    geometry: Geometry | CellGeometry,
    *,
    particle: str = "e-",
    incidence: Incidence = Incidence(),
    start: GflashParameters | None = None,
    n_model: int = 256,
    n_hits: int = 200,
    seed: int = 0,
) -> GflashParameters:
    """Fit GFLASH to reference showers (see the module docstring for the four stages).

    Args:
        reference: showers of ``particle`` in ``geometry`` (ShowerData or a CaloChallenge file).
        geometry: their readout: cylinders whose non-empty layers share radial bins, or hexagonal-lattice cells.
        particle: ``e-``, ``e+`` or ``gamma``.
        incidence: the references' direction and entry point (the readout follows their trajectory).
        start: the medium and sampling term to start from (its calibration fields are refitted); when omitted,
            the published defaults (Par04 medium) for cylinders and :func:`hgcal_like_parameters` for cells.
        n_model: GFLASH showers per energy group for the expected profiles.
        n_hits: GFLASH showers per energy group and iteration for the hit-count fit.
        seed: seed of the model showers.

    Returns:
        The calibrated parameters, with a ``provenance`` describing the fit.
    """
    data = reference if isinstance(reference, ShowerData) else read_showers(reference, geometry)
    source = "in-memory showers" if isinstance(reference, ShowerData) else str(reference)
    if data.showers.shape[1] != geometry.n_voxels:
        raise CalibrationError(f"reference showers have {data.showers.shape[1]} voxels, geometry {geometry.name!r} has {geometry.n_voxels}")
    if particle not in _PARTICLES:
        raise CalibrationError(f"GFLASH calibration supports e-, e+ and gamma references, not {particle!r}")
    if len(data) < 10:
        raise CalibrationError(f"need at least 10 reference showers to calibrate, got {len(data)}")
    if n_model < 1 or n_hits < 1:
        raise CalibrationError(f"n_model and n_hits must be >= 1, got {n_model} and {n_hits}")
    if start is None:
        start = hgcal_like_parameters() if geometry.kind == "cells" else GflashParameters.default()
    params = start.with_(
        depth_offset=0.0, depth_slope=0.0, shape_offset=0.0, shape_slope=0.0, profile_tilt=0.0, origin_offset=0.0, origin_slope=0.0,
        core_radius_scale=1.0, tail_radius_scale=1.0, radius_slope=0.0, core_weight_offset=0.0, energy_scale=1.0, energy_slope=0.0,
    )
    model = Expectation(geometry, incidence, geometry.layer_energies(data.showers).mean(axis=0))
    photons = _PARTICLES[particle] == "gamma"
    groups = _summarise(data, geometry, photons, n_model, n_hits, np.random.default_rng(seed))
    for _ in range(_ROUNDS):  # the longitudinal fit sees the radial containment of the previous round
        params = _fit_longitudinal(groups, model, params)
        params, contained = _fit_radial(groups, model, params)
    scale = np.array([g.response / c for g, c in zip(groups, contained, strict=True)])
    log_e = _log_energies(groups)
    slope, intercept = np.polyfit(log_e, scale, 1) if np.ptp(log_e) > 0.5 else (0.0, float(scale.mean()))
    params = params.with_(
        energy_scale=float(intercept),
        energy_slope=float(slope),
        sampling_term=float(np.sqrt(np.mean([g.resolution**2 for g in groups]))),
    )
    params = _fit_spots(groups, geometry, params, particle, incidence, seed)
    points = ", ".join(f"{np.exp(np.mean(np.log(g.hit_energies))) / 1000:.3g}" for g in groups)
    return params.with_(
        provenance=f"calibrate_gflash on {len(data)} {particle} showers from {source} (energy groups at {points} GeV, "
        f"geometry {geometry.name}, theta {incidence.theta:.4f} rad, phi {incidence.phi:.4f} rad), starting from the "
        "published Grindhammer-Peters coefficients; fitted depth/shape "
        "and origin offsets (with their ln E slopes) and the profile tilt to the mean longitudinal profile including "
        "radial containment, radial scales (with their power of E) to the mean radial profile, energy scale and "
        "sampling term to the total energy, spot count to the mean number of hit voxels"
    )
