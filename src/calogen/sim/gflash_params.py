"""GFLASH parameter sets: the frozen :class:`GflashParameters`, its JSON files, the medium of any stack and the
sets shipped with calogen.

A set holds the medium constants of the sampling calorimeter (X0, Ec, R_M, Z_eff, Fs, e_hat, the stochastic
term) and the calibration offsets that :mod:`calogen.sim.calibrate` fits; the formulas that use them live in
:mod:`calogen.sim.gflash_longitudinal` and :mod:`calogen.sim.gflash_radial`. The defaults are the published,
uncalibrated model for the CaloChallenge DS2/DS3 "Par04" stack (1.4 mm W + 0.3 mm Si): Z_eff 72.5, X0 4.22 mm,
Ec 8.2 MeV, R_M 10.9 mm, Fs = X0 / 1.7 mm, ``e_hat = 1 / (1 + 0.007 (Z_W - Z_Si))``;
:meth:`GflashParameters.for_stack` derives the medium of any :class:`~calogen.sim.detector.LayerStack` and
:meth:`GflashParameters.packaged` loads a calibrated set from ``calogen/data``.

Example:
    >>> p = GflashParameters.default().with_(depth_offset=0.5)
    >>> GflashParameters.from_dict(p.to_dict()) == p
    True
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from calogen.errors import CalogenError
from calogen.io import atomic_path
from calogen.sim.detector import LayerStack

__all__ = [
    "HGCAL_LIKE_SAMPLING_TERM",
    "PACKAGED",
    "GflashParameterError",
    "GflashParameters",
    "default_parameters",
    "hgcal_like_parameters",
]

PACKAGED = {
    "ds2-electron": "gflash_ds2_electron.json",
    "hgcal-like-electron": "gflash_hgcal_electron.json",
    "hgcal-like-gamma": "gflash_hgcal_photon.json",
}
"""Name of every packaged parameter set -> its file in ``calogen/data``; each records its provenance."""


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
        """A calibrated set shipped with calogen (:data:`PACKAGED`): ``ds2-electron`` (tuned to the detailed MC of
        electrons on Par04), ``hgcal-like-electron`` or ``hgcal-like-gamma`` (tuned to the detailed MC of electrons
        or photons at eta 2 on the HGCal-like stack)."""
        if name not in PACKAGED:
            raise GflashParameterError(f"no packaged GFLASH parameters {name!r}; choose one of {sorted(PACKAGED)}")
        text = resources.files("calogen").joinpath("data", PACKAGED[name]).read_text(encoding="utf-8")
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


HGCAL_LIKE_SAMPLING_TERM = 0.20
"""Stochastic term (sqrt(GeV)) of the HGCal-like stack used by its GFLASH parameters (docs/geometries.md)."""


def hgcal_like_parameters() -> GflashParameters:
    """Uncalibrated GFLASH parameters of :meth:`LayerStack.hgcal_like` (:meth:`GflashParameters.for_stack`)."""
    return GflashParameters.for_stack(LayerStack.hgcal_like(), sampling_term=HGCAL_LIKE_SAMPLING_TERM)


def default_parameters(kind: str, particle: str) -> GflashParameters:
    """The set a simulation of ``particle`` (``e-``, ``e+`` or ``gamma``) uses on a geometry of ``kind`` when given none.

    Cylindrical readouts model the Par04 stack: the packaged ``ds2-electron`` for every particle. Cell readouts
    model the HGCal-like stack: the packaged ``hgcal-like-gamma`` for photons, ``hgcal-like-electron`` for e+-
    (docs/geometries.md). :meth:`GflashParameters.default` is the published Par04 set; :func:`hgcal_like_parameters`
    the published, uncalibrated HGCal-like one.
    """
    if kind == "cylindrical":
        return GflashParameters.packaged("ds2-electron")
    if kind == "cells":
        return GflashParameters.packaged("hgcal-like-gamma" if particle == "gamma" else "hgcal-like-electron")
    raise GflashParameterError(f"no default GFLASH parameters for a {kind!r} geometry; expected 'cylindrical' or 'cells'")
