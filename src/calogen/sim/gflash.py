"""GFLASH: parametrised electromagnetic showers (Grindhammer & Peters) scored into any Geometry.

Every shower is drawn in three steps (hep-ex/0001020, the model behind Geant4's GFlash):

1. **Longitudinal.** The energy profile is a Gamma density in depth t (units of X0),
   ``dE/dt = E beta (beta t)^(alpha-1) exp(-beta t) / Gamma(alpha)`` with ``beta = (alpha - 1) / T``.
   ``(ln T, ln alpha)`` are correlated normals per shower; their means follow the homogeneous fits
   ``<T> = ln y - 0.812`` and ``<alpha> = 0.81 + (0.458 + 2.26 / Z) ln y`` (``y = E / Ec``) shifted for a
   sampling calorimeter by ``-0.55 / Fs - 0.69 (1 - e_hat)`` and ``-0.476 / Fs``; their spreads are
   ``1 / (-2.5 + 1.25 ln y)`` and ``1 / (-0.82 + 0.79 ln y)`` with correlation ``0.784 - 0.023 ln y``.
   Calibration may tilt every profile by ``exp(profile_tilt t / <t>)``, ``<t> = alpha / beta`` its centre of
   gravity, which leaves a Gamma density of rate ``beta (1 - profile_tilt / alpha)``.
2. **Spots.** ``N = spot_scale * 10.3 / c * (E / GeV)^0.959`` spots (c the sampling term) are placed
   in depth from the spot profile, a Gamma density with ``T_s = T (0.813 + 0.0019 Z)`` and
   ``alpha_s = alpha (0.844 + 0.0026 Z)``, on depth steps of :data:`STEP_X0`. A spot carries its step's
   share of the energy profile over its expected spot count (an importance weight); the weights are
   normalised to the shower's deposited energy, itself Gamma-distributed with mean ``response(E) E``,
   ``response(E) = energy_scale + energy_slope ln(E / GeV)``, and variance ``c^2 E`` (sampling fluctuations).
   Calibration may move the profile's origin ``origin_offset + origin_slope ln(E / GeV)`` X0 upstream of the
   calorimeter front.
3. **Radial.** At depth ``tau`` (t in units of T) a spot sits at radius ``r = R_M R sqrt(u / (1 - u))``,
   ``R = R_C`` with probability p and ``R_T`` otherwise, so that
   ``f(r) = p 2 r R_C^2 / (r^2 + R_C^2)^2 + (1 - p) 2 r R_T^2 / (r^2 + R_T^2)^2``; R_C, R_T and p are the
   paper's functions of tau, E and Z with the sampling corrections in ``1 - e_hat`` and ``1 / Fs``, both radii
   scaled by calibration factors times ``(E / GeV)^radius_slope``.

**Inclined showers** (:class:`~calogen.sim.readout.Incidence`): the longitudinal and radial profiles are
drawn along the shower axis exactly as above (depth t in X0 along the axis, radius in the plane normal to
it) and every spot is then carried into the detector frame, ``entry + s u + x e1 + y e2`` (u the direction,
e1, e2 normal to it), and scored where it lands. This treats the stack as a homogeneous medium seen along
the axis: the sampling corrections (Fs, e_hat) keep their normal-incidence values although the axis
crosses 1 / cos theta more material per layer, and a spot's depth in X0 is its distance along the axis.

At normal incidence into a cylindrical readout :meth:`GflashSimulation.simulate` scores the spots in one
compiled pass from their polar coordinates, never forming x and y; :meth:`GflashSimulation.spots` places
the same spots (same random numbers) in Cartesian coordinates of the detector frame, and scoring those
with :func:`~calogen.sim.readout.score_points` (or, at normal incidence,
:func:`~calogen.sim.readout.score_deposits`) gives the same voxels. Other incidences and cell readouts
always take the Cartesian path.

The medium defaults to the CaloChallenge DS2/DS3 "Par04" stack (1.4 mm W + 0.3 mm Si): Z_eff 72.5,
X0 4.22 mm, Ec 8.2 MeV, R_M 10.9 mm, Fs = X0 / 1.7 mm, ``e_hat = 1 / (1 + 0.007 (Z_W - Z_Si))``.
:meth:`GflashParameters.for_stack` derives these medium constants for any
:class:`~calogen.sim.detector.LayerStack` (cell readouts default to it for the HGCal-like stack). Voxel
energies are in CaloChallenge units (deposit / sampling fraction, so about E), and voxels below
``geometry.threshold`` are zeroed.

Reference: G. Grindhammer and S. Peters, "The parameterized simulation of electromagnetic showers in
homogeneous and sampling calorimeters", hep-ex/0001020.

Example:
    >>> from calogen.geometry import Geometry
    >>> sim = GflashSimulation(Geometry.builtin("ds2"))
    >>> sim.sample([10_000.0, 50_000.0], seed=1).shape
    (2, 6480)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numba as nb
import numpy as np

from calogen.cell_geometry import CellGeometry
from calogen.errors import CalogenError
from calogen.generator import derive_seed
from calogen.geometry import Geometry
from calogen.io import atomic_path
from calogen.sim.detector import LayerStack
from calogen.sim.readout import (
    Incidence,
    layer_row,
    readout_arrays,
    row_voxel,
    score_points,
)

__all__ = [
    "HGCAL_LIKE_SAMPLING_TERM",
    "STEP_X0",
    "DepthSteps",
    "GflashParameterError",
    "GflashParameters",
    "GflashSimulation",
    "Spots",
    "calibrate_radial",
    "check_energies",
    "depth_steps",
    "gamma_rate",
    "hgcal_like_parameters",
    "longitudinal_parameters",
    "mean_log_shape",
    "n_spots",
    "origin",
    "published_radial",
    "radial_parameters",
    "radius_scales",
    "response",
]

_GEV = 1000.0
_PHOTON_CONVERSION_X0 = 9.0 / 7.0  # mean depth of the first pair conversion, X0
_PACKAGED = {"ds2-electron": "gflash_ds2_electron.json"}
_PARTICLES = {"e-": "e-", "electron": "e-", "e+": "e+", "positron": "e+", "gamma": "gamma", "photon": "gamma"}


class GflashParameterError(CalogenError):
    """A GFLASH parameter set or its JSON file is invalid."""


def _par04_z_eff() -> float:
    """Mass-weighted Z of 1.4 mm W (19.3 g/cm3) + 0.3 mm Si (2.33 g/cm3)."""
    w_mass, si_mass = 1.4 * 19.3, 0.3 * 2.33
    return (74.0 * w_mass + 14.0 * si_mass) / (w_mass + si_mass)


@dataclass(frozen=True)
class GflashParameters:
    """Medium, published-model switches and calibration offsets of a GFLASH simulation.

    Args:
        x0_mm, critical_energy_mev, moliere_radius_mm: effective X0, Ec and R_M of the sampling medium.
        z_eff: effective atomic number of the medium.
        sampling_frequency: Fs = X0 / (absorber + active thickness).
        e_hat: e/mip ratio, ``1 / (1 + 0.007 (Z_absorber - Z_active))``.
        sampling_term: stochastic resolution c in sqrt(GeV) (sigma/E = c / sqrt(E/GeV)).
        depth_offset, depth_slope: ``depth_offset + depth_slope ln(E / GeV)`` is added to the mean depth
            of shower maximum T, in X0.
        shape_offset, shape_slope: ``shape_offset + shape_slope ln(E / GeV)`` is added to the mean Gamma
            shape alpha.
        profile_tilt: exponential tilt of every shower's longitudinal and spot profiles: each Gamma density is
            multiplied by ``exp(profile_tilt t / <t>)``, ``<t> = alpha / beta`` its centre of gravity, which keeps
            it a Gamma density with rate ``beta (1 - profile_tilt / alpha)`` (see :func:`gamma_rate`); it changes
            how the spread of (T, alpha) between showers shapes the mean profile. In [-5, 5].
        origin_offset, origin_slope: depth of the calorimeter front inside the profile,
            ``origin_offset + origin_slope ln(E / GeV)`` X0 (see :func:`origin`): the Gamma profile starts this far
            upstream (profile depth t sits at z = (t - origin) X0; spots at z < 0 are lost).
        core_radius_scale, tail_radius_scale: factors on R_C and R_T.
        radius_slope: both radii are further scaled by ``(E / GeV)^radius_slope`` (see :func:`radius_scales`).
        core_weight_offset: added to the core probability p (then clipped to [0, 1]).
        spot_scale: factor on the number of spots.
        spot_exponent: power of E/GeV in the number of spots (published 0.959).
        energy_scale, energy_slope: mean deposited over incident energy (CaloChallenge units) is
            ``energy_scale + energy_slope ln(E / GeV)`` (at least 0.01).
        provenance: free text saying where the values come from.
    """

    x0_mm: float = 4.22
    critical_energy_mev: float = 8.2
    moliere_radius_mm: float = 10.9
    z_eff: float = _par04_z_eff()
    sampling_frequency: float = 4.22 / 1.7
    e_hat: float = 1.0 / (1.0 + 0.007 * (74.0 - 14.0))
    sampling_term: float = 0.11
    depth_offset: float = 0.0
    depth_slope: float = 0.0
    shape_offset: float = 0.0
    shape_slope: float = 0.0
    profile_tilt: float = 0.0
    origin_offset: float = 0.0
    origin_slope: float = 0.0
    core_radius_scale: float = 1.0
    tail_radius_scale: float = 1.0
    radius_slope: float = 0.0
    core_weight_offset: float = 0.0
    spot_scale: float = 1.0
    spot_exponent: float = 0.959
    energy_scale: float = 1.0
    energy_slope: float = 0.0
    provenance: str = "published Grindhammer-Peters sampling-calorimeter coefficients (hep-ex/0001020), Par04 medium"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "provenance":
                if not isinstance(value, str):
                    raise GflashParameterError(f"provenance must be a string, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise GflashParameterError(f"GFLASH parameter {f.name} must be a finite number, got {value!r}")
        positive = ("x0_mm", "critical_energy_mev", "moliere_radius_mm", "z_eff", "sampling_frequency",
                    "sampling_term", "core_radius_scale", "tail_radius_scale", "spot_scale", "energy_scale")  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise GflashParameterError(f"GFLASH parameter {name} must be > 0, got {getattr(self, name)!r}")
        if not -5.0 <= self.profile_tilt <= 5.0:
            raise GflashParameterError(f"GFLASH parameter profile_tilt must lie in [-5, 5], got {self.profile_tilt!r}")
        if not 0 < self.e_hat <= 1:
            raise GflashParameterError(f"e_hat must lie in (0, 1], got {self.e_hat!r}")

    @classmethod
    def default(cls) -> GflashParameters:
        """The published, uncalibrated model for the Par04 medium."""
        return cls()

    @classmethod
    def for_stack(cls, stack: LayerStack, sampling_term: float = 0.11) -> GflashParameters:
        """The published model for the medium of ``stack`` (assumed periodic: Fs = X0 over one period).

        X0, Ec and R_M of the mixture (:class:`LayerStack`), mass-weighted Z, the period from the first
        sensitive slab, ``e_hat`` from the mass-weighted Z of the absorbers and of the sensitive material.
        """
        names = [m.name for m in stack.materials]
        sensitive = [i for i, m in enumerate(stack.slab_material) if names[m] in stack.sensitive]
        if not sensitive:
            raise GflashParameterError("the stack has no sensitive slab; GFLASH needs a sampling period")
        period = sum(stack.thickness[: sensitive[0] + 1])
        _, mass = stack.fractions()
        active = np.array([name in stack.sensitive for name in names])
        z = np.array([m.z for m in stack.materials])
        z_passive = float((mass * z)[~active].sum() / max(mass[~active].sum(), 1e-12)) if (~active).any() else 0.0
        z_active = float((mass * z)[active].sum() / mass[active].sum())
        x0 = stack.radiation_length()
        return cls(
            x0_mm=x0, critical_energy_mev=stack.critical_energy(), moliere_radius_mm=stack.moliere_radius(),
            z_eff=stack.z_eff(), sampling_frequency=x0 / period, e_hat=1.0 / (1.0 + 0.007 * max(z_passive - z_active, 0.0)),
            sampling_term=sampling_term,
            provenance=f"published Grindhammer-Peters coefficients (hep-ex/0001020), medium of a {len(stack.thickness)}-slab stack",
        )  # fmt: skip

    @classmethod
    def packaged(cls, name: str = "ds2-electron") -> GflashParameters:
        """A calibrated set shipped with calogen (``ds2-electron``: tuned to the detailed MC on Par04)."""
        if name not in _PACKAGED:
            raise GflashParameterError(f"no packaged GFLASH parameters {name!r}; choose one of {sorted(_PACKAGED)}")
        text = resources.files("calogen").joinpath("data", _PACKAGED[name]).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text), source=f"packaged {name}")

    def with_(self, **changes: Any) -> GflashParameters:
        """A copy with some fields changed (validated)."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise GflashParameterError(f"unknown GFLASH parameter(s) {unknown}")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "dict") -> GflashParameters:
        """Parameters from a dict; unknown keys are errors, missing keys take the defaults."""
        if not isinstance(data, dict):
            raise GflashParameterError(f"{source}: expected a JSON object of GFLASH parameters")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GflashParameterError(f"{source}: unknown GFLASH parameter(s) {unknown}; allowed: {sorted(known)}")
        return cls(**data)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the parameters as JSON (atomically)."""
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GflashParameters:
        """Read parameters written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise GflashParameterError(f"{path}: no such GFLASH parameter file") from None
        except json.JSONDecodeError as exc:
            raise GflashParameterError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source=str(path))


# --- longitudinal ------------------------------------------------------------------------------
def _log_sigma(a: float, b: float, log_y: np.ndarray) -> np.ndarray:
    """Spread ``1 / (a + b ln y)`` of a log-normal parameter, capped at 0.5 (also where it diverges)."""
    denom = a + b * log_y
    return np.where(denom > 2.0, 1.0 / np.maximum(denom, 2.0), 0.5)


def mean_log_shape(energies: np.ndarray, params: GflashParameters) -> tuple[np.ndarray, np.ndarray]:
    """Means of ``ln T`` and ``ln alpha`` for incident energies ``(N,)`` MeV (sampling medium, offsets applied)."""
    log_y = np.log(np.asarray(energies, dtype=np.float64) / params.critical_energy_mev)
    t_hom = np.maximum(log_y - 0.812, 0.1)
    a_hom = np.maximum(0.81 + (0.458 + 2.26 / params.z_eff) * log_y, 1.1)
    log_e = np.log(np.asarray(energies, dtype=np.float64) / _GEV)
    t_shift = params.depth_offset + params.depth_slope * log_e
    t_mean = t_hom - 0.55 / params.sampling_frequency - 0.69 * (1.0 - params.e_hat) + t_shift
    a_mean = a_hom - 0.476 / params.sampling_frequency + params.shape_offset + params.shape_slope * log_e
    return np.log(np.maximum(t_mean, 0.1)), np.log(np.maximum(a_mean, 1.1))


def longitudinal_parameters(
    energies: np.ndarray, normals: np.ndarray, params: GflashParameters
) -> tuple[np.ndarray, np.ndarray]:
    """Per-shower depth of maximum T (X0) and Gamma shape alpha from two standard normals per shower.

    ``ln T = <ln T> + s_T (c1 z1 + c2 z2)``, ``ln alpha = <ln alpha> + s_a (c1 z1 - c2 z2)`` with
    ``c1, c2 = sqrt((1 +- rho) / 2)``, so ``corr(ln T, ln alpha) = rho``.

    Args:
        energies: incident energies ``(N,)`` MeV.
        normals: ``(N, 2)`` standard normal draws.
        params: the parameter set.

    Returns:
        T ``(N,)`` (>= 0.1) and alpha ``(N,)`` (>= 1.1).
    """
    energies = np.asarray(energies, dtype=np.float64)
    log_y = np.log(energies / params.critical_energy_mev)
    mean_t, mean_a = mean_log_shape(energies, params)
    sig_t = _log_sigma(-2.5, 1.25, log_y)
    sig_a = _log_sigma(-0.82, 0.79, log_y)
    rho = np.clip(0.784 - 0.023 * log_y, -1.0, 1.0)
    c1, c2 = np.sqrt((1.0 + rho) / 2.0), np.sqrt((1.0 - rho) / 2.0)
    z1, z2 = normals[:, 0], normals[:, 1]
    t_max = np.maximum(np.exp(mean_t + sig_t * (c1 * z1 + c2 * z2)), 0.1)
    alpha = np.maximum(np.exp(mean_a + sig_a * (c1 * z1 - c2 * z2)), 1.1)
    return t_max, alpha


def gamma_rate(t_max: Any, alpha: Any, params: GflashParameters) -> Any:
    """Rate (1/X0) of a Gamma profile of maximum ``t_max`` (X0) and shape ``alpha`` after the tilt.

    ``beta = (alpha - 1) / T (1 - profile_tilt / alpha)``, kept at or above ``(alpha - 1) / T / 4``.
    """
    alpha = np.asarray(alpha)
    beta = (alpha - 1.0) / np.asarray(t_max)
    return beta * np.maximum(1.0 - params.profile_tilt / alpha, 0.25)


def spot_profile(t_max: np.ndarray | float, alpha: np.ndarray | float, params: GflashParameters) -> tuple[Any, Any]:
    """Gamma shape and rate ``(alpha_s, beta_s)`` of the spot profile: ``T_s = T (0.813 + 0.0019 Z)``, ``alpha_s = alpha (0.844 + 0.0026 Z)``, tilted as the energy profile."""
    t_s = np.maximum(np.asarray(t_max) * (0.813 + 0.0019 * params.z_eff), 0.1)
    a_s = np.maximum(np.asarray(alpha) * (0.844 + 0.0026 * params.z_eff), 1.1)
    return a_s, gamma_rate(t_s, a_s, params)


def origin(energy: float, params: GflashParameters) -> float:
    """Depth (X0) of the calorimeter front inside the profile: ``origin_offset + origin_slope ln(E / GeV)``."""
    return params.origin_offset + params.origin_slope * math.log(energy / _GEV)


def response(energy: float, params: GflashParameters) -> float:
    """Mean deposited over incident energy: ``energy_scale + energy_slope ln(E / GeV)``, at least 0.01."""
    return max(params.energy_scale + params.energy_slope * math.log(energy / _GEV), 0.01)


def n_spots(energy: float, params: GflashParameters) -> int:
    """Number of spots ``spot_scale * 10.3 / c * (E / GeV)^spot_exponent``, at least 1."""
    mean = params.spot_scale * 10.3 / params.sampling_term * (energy / _GEV) ** params.spot_exponent
    return max(1, int(round(mean)))


# --- radial ------------------------------------------------------------------------------------
def radial_coefficients(energy: float, params: GflashParameters) -> np.ndarray:
    """Coefficients ``(11,)`` of R_C, R_T and p at incident energy ``energy`` MeV (see :func:`_radial_shape`)."""
    log_e = math.log(energy / _GEV)
    z = params.z_eff
    return np.array(
        [
            0.0251 + 0.00319 * log_e,  # z1: R_C = z1 + z2 tau
            0.1162 - 0.000381 * z,  # z2
            2.632 - 0.00094 * z,  # p1: p = p1 exp(x - exp(x)), x = (p2 - tau) / p3
            0.401 + 0.00187 * z,  # p2
            1.313 - 0.0686 * log_e,  # p3
            0.659 - 0.00309 * z,  # k1: R_T = k1 (exp(k3 (tau - k2)) + exp(k4 (tau - k2)))
            0.645,  # k2
            -2.59,  # k3
            0.3585 + 0.0412 * log_e,  # k4
            1.0 - params.e_hat,
            1.0 / params.sampling_frequency,
        ]
    )


@nb.njit(cache=True)
def _radial_shape(tau: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Published R_C, R_T (units of R_M) and p at depths tau ``(K,)``, with sampling corrections: ``(3, K)``.

    ``R_C += -0.0203 (1 - e_hat) + 0.0397 / Fs exp(-tau)``,
    ``R_T += -0.14 (1 - e_hat) - 0.495 / Fs exp(-tau)``,
    ``p += (1 - e_hat) (0.348 - 0.642 / Fs exp(-(tau - 1)^2))``.
    """
    one_m_ehat = c[9]
    inv_fs = c[10]
    out = np.empty((3, tau.shape[0]))
    for k in range(tau.shape[0]):
        t = tau[k]
        e_tau = math.exp(-t)
        x = (c[3] - t) / c[4]
        out[0, k] = c[0] + c[1] * t - 0.0203 * one_m_ehat + 0.0397 * inv_fs * e_tau
        out[1, k] = c[5] * (math.exp(c[7] * (t - c[6])) + math.exp(c[8] * (t - c[6]))) - 0.14 * one_m_ehat - 0.495 * inv_fs * e_tau
        out[2, k] = c[2] * math.exp(x - math.exp(x)) + one_m_ehat * (0.348 - 0.642 * inv_fs * math.exp(-((t - 1.0) ** 2)))
    return out


def published_radial(tau: np.ndarray, energy: float, params: GflashParameters) -> np.ndarray:
    """Uncalibrated R_C, R_T (units of R_M) and p at depths ``tau`` ``(K,)`` (units of T) for energy MeV: ``(3, K)``."""
    return _radial_shape(np.ascontiguousarray(tau, dtype=np.float64), radial_coefficients(energy, params))


@nb.njit(cache=True)
def _calibrate(raw: np.ndarray, core_scale: float, tail_scale: float, weight_offset: float) -> np.ndarray:
    """``(3, K)`` published R_C, R_T, p -> ``max(R_C core_scale, 1e-4)``, ``max(R_T tail_scale, 1e-4)``, ``clip(p + weight_offset, 0, 1)``."""
    out = np.empty_like(raw)
    for k in range(raw.shape[1]):
        out[0, k] = max(raw[0, k] * core_scale, 1e-4)
        out[1, k] = max(raw[1, k] * tail_scale, 1e-4)
        out[2, k] = min(max(raw[2, k] + weight_offset, 0.0), 1.0)
    return out


def radius_scales(energy: Any, params: GflashParameters) -> tuple[Any, Any]:
    """Factors on R_C and R_T at incident energy ``energy`` MeV: ``core_radius_scale (E / GeV)^radius_slope`` and
    ``tail_radius_scale (E / GeV)^radius_slope``."""
    factor = (np.asarray(energy, dtype=np.float64) / _GEV) ** params.radius_slope
    return params.core_radius_scale * factor, params.tail_radius_scale * factor


def calibrate_radial(raw: np.ndarray, params: GflashParameters, energy: float | np.ndarray = _GEV) -> np.ndarray:
    """Apply the radial calibration to ``(3, K)`` published values: scale R_C and R_T, shift p, clip to valid ranges.

    ``energy`` (MeV) is the incident energy, a number or one per column ``(K,)``.
    """
    scaled = np.array(raw, dtype=np.float64)
    core, tail = radius_scales(energy, params)
    scaled[0] *= core
    scaled[1] *= tail
    return _calibrate(scaled, 1.0, 1.0, params.core_weight_offset)


def radial_parameters(tau: np.ndarray, energy: float, params: GflashParameters) -> np.ndarray:
    """Calibrated R_C, R_T (units of R_M) and core probability p at depths ``tau`` ``(K,)``: ``(3, K)``."""
    return calibrate_radial(published_radial(tau, energy, params), params, energy)


# --- depth steps -------------------------------------------------------------------------------
STEP_X0 = 0.2
"""Width of the depth steps (X0) within which spots share energy and radial shape."""


@nb.njit(cache=True)
def _gamma_step_fractions(alpha: float, beta: float, n_steps: int, h: float) -> np.ndarray:
    """Fractions ``(n_steps,)`` of a Gamma(alpha, rate beta) density in steps of width h (midpoint rule, normalised)."""
    out = np.empty(n_steps)
    total = 0.0
    for j in range(n_steps):
        t = (j + 0.5) * h
        out[j] = math.exp((alpha - 1.0) * math.log(beta * t) - beta * t)
        total += out[j]
    for j in range(n_steps):
        out[j] /= total
    return out


@nb.njit(cache=True)
def _depth_profile(
    alpha: float, beta: float, alpha_s: float, beta_s: float, n_steps: int, tau_step: float, coeffs: np.ndarray,
    core_scale: float, tail_scale: float, weight_offset: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Energy and spot fractions, tau and calibrated radial parameters of :class:`DepthSteps` in one compiled call."""
    tau = (np.arange(n_steps) + 0.5) * tau_step
    radial = _calibrate(_radial_shape(tau, coeffs), core_scale, tail_scale, weight_offset)
    energy = _gamma_step_fractions(alpha, beta, n_steps, STEP_X0)
    return energy, _gamma_step_fractions(alpha_s, beta_s, n_steps, STEP_X0), tau, radial


@dataclass(frozen=True)
class DepthSteps:
    """One shower's profile on steps ``[j h, (j + 1) h)`` X0 after its start (h = :data:`STEP_X0`).

    Attributes:
        energy: fraction of the deposited energy per step ``(S,)`` (sums to 1).
        spots: fraction of the spots per step ``(S,)`` (sums to 1).
        tau: every step's middle in units of T (see :func:`depth_steps`), ``(S,)``.
        radial: R_C, R_T (units of R_M) and core probability p at ``tau``, ``(3, S)``.
    """

    energy: np.ndarray
    spots: np.ndarray
    tau: np.ndarray
    radial: np.ndarray


def depth_steps(
    energy: float, t_max: float, alpha: float, params: GflashParameters, mean_alpha: float | None = None
) -> DepthSteps:
    """Energy, spot and radial profiles of a shower with depth of maximum ``t_max`` (X0) and shape ``alpha``.

    Steps extend to 10 standard deviations beyond the mean of the longer of the two Gamma profiles.
    The radial shape is taken at ``tau``, the depth in units of the shower's centre of gravity rescaled so
    that ``tau = t / T`` for a shower of mean shape: ``tau = t (beta / alpha) <alpha> / (<alpha> - 1)``,
    with beta the (tilted) rate of :func:`gamma_rate` and ``<alpha> = exp<ln alpha>`` at ``energy`` (computed
    when ``mean_alpha`` is not given).
    """
    beta = float(gamma_rate(t_max, alpha, params))
    alpha_s, beta_s = (float(v) for v in spot_profile(t_max, alpha, params))
    t_end = max((alpha + 10.0 * math.sqrt(alpha)) / beta, (alpha_s + 10.0 * math.sqrt(alpha_s)) / beta_s)
    n_steps = int(math.ceil(t_end / STEP_X0))
    if mean_alpha is None:
        mean_alpha = math.exp(float(mean_log_shape(np.array([energy]), params)[1][0]))
    tau_per_x0 = beta / alpha * mean_alpha / (mean_alpha - 1.0)
    profile = _depth_profile(
        alpha, beta, alpha_s, beta_s, n_steps, STEP_X0 * tau_per_x0, radial_coefficients(energy, params),
        *(float(v) for v in radius_scales(energy, params)), params.core_weight_offset,
    )  # fmt: skip
    return DepthSteps(*profile)


# --- spots -------------------------------------------------------------------------------------
@nb.njit(cache=True)
def _spot_weights(
    energy_frac: np.ndarray, spot_frac: np.ndarray, n: int, u_alloc: float, deposited: float
) -> tuple[np.ndarray, np.ndarray]:
    """Spot count ``(S,)`` and energy (MeV) of one spot ``(S,)`` in every depth step.

    Spots are allotted to steps by systematic sampling of ``spot_frac`` (offset ``u_alloc``). A spot in
    step j carries ``energy_frac[j] / (n spot_frac[j])`` (an importance weight, so the expected energy per
    step follows the energy profile even where steps get no spot), scaled so that all n spots sum to
    ``deposited``.
    """
    n_steps = spot_frac.shape[0]
    counts = np.zeros(n_steps, dtype=np.int64)
    energy = np.zeros(n_steps)
    cum = 0.0
    prev = 0
    placed = 0.0
    for j in range(n_steps):
        cum += spot_frac[j]
        upto = n if j == n_steps - 1 else min(int(math.floor(n * cum + u_alloc)), n)
        counts[j] = max(upto - prev, 0)
        prev = upto
        if counts[j] > 0:
            energy[j] = energy_frac[j] / (n * spot_frac[j])  # unbiased: E[count] = n spot_frac[j]
            placed += energy[j] * counts[j]
    scale = deposited / placed
    for j in range(n_steps):
        energy[j] *= scale
    return counts, energy


@nb.njit(cache=True, inline="always")
def _spot_radius(v: float, rc: float, rt: float, p: float) -> float:
    """Radius (units of R_M) of a spot from one uniform ``v``: core (R_C) if ``v < p``, else tail (R_T).

    The remainder ``w`` of ``v`` within its branch is uniform and gives ``r = R sqrt(w / (1 - w))``.
    """
    if v < p:
        r_unit, w = rc, v / p
    else:
        r_unit, w = rt, (v - p) / (1.0 - p)
    w = min(w, 1.0 - 1e-9)  # keeps the radius finite
    return r_unit * math.sqrt(w / (1.0 - w))


@nb.njit(cache=True)
def _place_spots(
    counts: np.ndarray, energy: np.ndarray, radial: np.ndarray, u: np.ndarray, t0: float, x0: float, rm: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Positions (mm) and energies (MeV) of the spots allotted by :func:`_spot_weights`.

    Spots lie uniformly within their step. ``u`` holds three uniforms per spot: core/tail choice (its
    remainder gives the radius), azimuth ``phi = 2 pi u`` and depth within the step.
    """
    n = u.shape[1]
    x = np.empty(n)
    y = np.empty(n)
    z = np.empty(n)
    e = np.empty(n)
    k = 0
    for j in range(counts.shape[0]):
        for _ in range(counts[j]):
            r = rm * _spot_radius(u[0, k], radial[0, j], radial[1, j], radial[2, j])
            phi = 2.0 * math.pi * u[1, k]
            x[k] = r * math.cos(phi)
            y[k] = r * math.sin(phi)
            z[k] = (t0 + (j + u[2, k]) * STEP_X0) * x0
            e[k] = energy[j]
            k += 1
    return x, y, z, e


@nb.njit(cache=True)
def _score_spots(
    counts: np.ndarray,
    energy: np.ndarray,
    radial: np.ndarray,
    u: np.ndarray,
    t0: float,
    x0: float,
    rm: float,
    z_lo: np.ndarray,
    z_hi: np.ndarray,
    r_edges: np.ndarray,
    n_r: np.ndarray,
    n_alpha: np.ndarray,
    offsets: np.ndarray,
    out: np.ndarray,
) -> None:
    """Add the spots of :func:`_place_spots` to the voxel accumulator ``out`` without forming x and y.

    The azimuth ``phi = 2 pi u`` is scored through its readout fraction ``(phi / (2 pi) + 1/2) mod 1``;
    the layer of the previous spot is tried first (spots come step by step in depth).
    """
    k = 0
    row = -1
    for j in range(counts.shape[0]):
        rc, rt, p, e = radial[0, j], radial[1, j], radial[2, j], energy[j]
        for _ in range(counts[j]):
            r = rm * _spot_radius(u[0, k], rc, rt, p)
            turn = u[1, k] + 0.5 if u[1, k] < 0.5 else u[1, k] - 0.5
            z = (t0 + (j + u[2, k]) * STEP_X0) * x0
            k += 1
            row = layer_row(z_lo, z_hi, z, row)
            if row >= 0:
                v = row_voxel(r_edges[row], n_r[row], n_alpha[row], offsets[row], r, turn)
                if v >= 0:
                    out[v] += e


@dataclass(frozen=True)
class Spots:
    """The energy spots of one shower: positions ``x, y, z`` (mm) and energies ``e`` (MeV), ``(K,)`` each.

    ``deposited`` is the shower's sampled deposited energy (MeV, CaloChallenge units), equal to ``e.sum()``;
    ``t_max`` (X0) and ``alpha`` are its longitudinal parameters and ``start`` the depth (X0) of its
    first interaction (photons only; 0 for e+-), the profile's origin before ``origin_offset``.
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    e: np.ndarray
    deposited: float
    t_max: float
    alpha: float
    start: float


@dataclass(frozen=True)
class _Shower:
    """One drawn shower: deposited energy (MeV), photon start (X0) and the arguments of :func:`_place_spots`."""

    deposited: float
    start: float
    kernel_args: tuple[Any, ...]


HGCAL_LIKE_SAMPLING_TERM = 0.20
"""Stochastic term (sqrt(GeV)) of the HGCal-like stack used by its GFLASH parameters (docs/geometries.md)."""


def hgcal_like_parameters() -> GflashParameters:
    """Uncalibrated GFLASH parameters of :meth:`LayerStack.hgcal_like` (:meth:`GflashParameters.for_stack`)."""
    return GflashParameters.for_stack(LayerStack.hgcal_like(), sampling_term=HGCAL_LIKE_SAMPLING_TERM)


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
        params: the model parameters; when omitted, for cylindrical readouts the packaged set calibrated to
            the detailed MC on the Par04 detector (the detector every cylindrical built-in models), for cell
            readouts :func:`hgcal_like_parameters`. ``GflashParameters.default()`` gives the published,
            uncalibrated Par04 set.
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
            params = hgcal_like_parameters() if geometry.kind == "cells" else GflashParameters.packaged()
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
        x, y, z, e = _place_spots(*shower.kernel_args)
        if not self.incidence.is_normal:
            x, y, z = self.incidence.to_frame(x, y, z)
        return Spots(x, y, z, e, shower.deposited, float(t_max[0]), float(alpha[0]), shower.start)

    def _draw(self, energy: float, t_max: float, alpha: float, mean_alpha: float, rng: np.random.Generator) -> _Shower:
        """The rest of a shower whose normals have been drawn from ``rng`` and turned into ``t_max``, ``alpha``."""
        p = self.params
        var_per_mev = p.sampling_term**2 * _GEV  # Var(E_dep) = c^2 E, both in MeV
        deposited = response(energy, p) * float(rng.gamma(energy / var_per_mev, var_per_mev))
        start = float(rng.exponential(_PHOTON_CONVERSION_X0)) if self.particle == "gamma" else 0.0
        steps = depth_steps(energy, t_max, alpha, p, mean_alpha)
        n = n_spots(energy, p)
        counts, per_spot = _spot_weights(steps.energy, steps.spots, n, float(rng.random()), deposited)
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
            _score_spots(*shower.kernel_args, ro.z_lo, ro.z_hi, ro.r_edges, ro.n_r, ro.n_alpha, ro.offsets, row)
            return
        x, y, z, e = _place_spots(*shower.kernel_args)
        score_points(ro, *self.incidence.to_frame(x, y, z), e, row)

    def sample(self, energies: np.ndarray | list[float], *, seed: int, batch_size: int | None = None) -> np.ndarray:
        """Generator interface: :meth:`simulate` in batches of ``batch_size`` (same result for any batch size)."""
        energies = check_energies(energies)
        if batch_size is not None and batch_size < 1:
            raise GflashParameterError(f"batch_size must be >= 1, got {batch_size}")
        step = max(energies.size, 1) if batch_size is None else batch_size
        parts = [self.simulate(energies[i : i + step], seed=seed, first_index=i) for i in range(0, energies.size, step)]
        return np.concatenate(parts) if parts else np.zeros((0, self.geometry.n_voxels), np.float32)
