"""Incident-energy specifications: ``10GeV``, ``loguniform:1GeV:1TeV``, ``uniform:1GeV:10GeV``, ``list:256MeV,512MeV``.

Example:
    >>> parse_energy("512MeV"), parse_energy("1TeV")
    (512.0, 1000000.0)
    >>> EnergySpec.parse("list:1GeV,2GeV").sample(4, seed=0).tolist()
    [2000.0, 2000.0, 2000.0, 1000.0]
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from calogen.errors import CalogenError

__all__ = ["DEFAULT_MAX_ENERGY_MEV", "EnergySpec", "EnergySpecError", "format_energy", "parse_energy"]

DEFAULT_MAX_ENERGY_MEV = 1e7
"""Highest incident energy a simulation accepts unless told otherwise: 10 TeV, above every CaloChallenge
dataset (DS1 reaches 4.2 TeV); GFLASH time and memory grow linearly with energy (1 PeV: 14 s, 4.5 GB)."""

_UNITS = {"kev": 1e-3, "mev": 1.0, "gev": 1e3, "tev": 1e6}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


class EnergySpecError(CalogenError):
    """An energy or energy specification cannot be parsed."""


def parse_energy(text: str) -> float:
    """An energy like ``10GeV``, ``512 MeV`` or ``1e4`` (MeV when no unit) in MeV; must be > 0."""
    match = _NUMBER.match(text)
    unit = match.group(2).lower() if match else ""
    if not match or (unit and unit not in _UNITS):
        raise EnergySpecError(f"cannot read energy {text!r}; write e.g. 10GeV, 512MeV or 1TeV")
    value = float(match.group(1)) * _UNITS[unit or "mev"]
    if not value > 0 or not math.isfinite(value):
        raise EnergySpecError(f"energy must be > 0, got {text!r}")
    return value


def format_energy(mev: float) -> str:
    """``mev`` with the largest unit that keeps it >= 1, e.g. ``format_energy(2.5e4) == "25 GeV"``."""
    for unit, scale in (("TeV", 1e6), ("GeV", 1e3), ("MeV", 1.0)):
        if abs(mev) >= scale:
            return f"{mev / scale:g} {unit}"
    return f"{mev * 1e3:g} keV"


@dataclass(frozen=True)
class EnergySpec:
    """A distribution of incident energies (MeV).

    Attributes:
        kind: ``fixed``, ``uniform``, ``loguniform`` or ``list``.
        values: the fixed value, the (low, high) range, or the list entries, in MeV.
    """

    kind: str
    values: tuple[float, ...]

    @classmethod
    def parse(cls, text: str) -> EnergySpec:
        """Parse a specification string (see the module docstring)."""
        kind, _, rest = text.partition(":")
        kind = kind.strip().lower()
        if not rest:
            return cls("fixed", (parse_energy(text),))
        if kind in ("uniform", "loguniform"):
            parts = rest.split(":")
            if len(parts) != 2:
                raise EnergySpecError(f"{text!r}: write {kind}:LOW:HIGH, e.g. {kind}:1GeV:1TeV")
            low, high = (parse_energy(p) for p in parts)
            if not low < high:
                raise EnergySpecError(f"{text!r}: LOW must be below HIGH")
            return cls(kind, (low, high))
        if kind == "list":
            values = tuple(parse_energy(p) for p in rest.split(",") if p.strip())
            if not values:
                raise EnergySpecError(f"{text!r}: the list is empty")
            return cls("list", values)
        raise EnergySpecError(f"{text!r}: unknown kind {kind!r}; use a fixed energy, uniform:, loguniform: or list:")

    @property
    def range(self) -> tuple[float, float]:
        """Smallest and largest energy this spec can produce (MeV)."""
        return (min(self.values), max(self.values))

    def sample(self, n: int, *, seed: int) -> np.ndarray:
        """``n`` energies in MeV, float64 ``(n,)``, reproducible from ``seed``."""
        if n < 1:
            raise EnergySpecError(f"number of showers must be >= 1, got {n}")
        rng = np.random.default_rng(seed)
        if self.kind == "fixed":
            return np.full(n, self.values[0])
        if self.kind == "uniform":
            return rng.uniform(self.values[0], self.values[1], n)
        if self.kind == "loguniform":
            return np.exp(rng.uniform(math.log(self.values[0]), math.log(self.values[1]), n))
        return np.asarray(self.values)[rng.integers(0, len(self.values), n)]
