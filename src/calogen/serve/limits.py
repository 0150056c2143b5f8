"""Limits that keep one request from exhausting the server: energy range and request size.

A served request may hold at most ``max_batch_size`` showers (:class:`~calogen.serve.batching.BatchingConfig`);
:class:`RequestLimits` adds the incident-energy range (the cost of a simulated shower grows with its
energy, and a trained model only knows its training range) and the size of an HTTP body before and
after ``Content-Encoding`` (gRPC messages are bounded by ``max_body_bytes`` too). Requests beyond a
limit are refused with a 4xx status before any work is done.

Example:
    >>> RequestLimits(energy_range=(1e3, 1e6)).energy_range
    (1000.0, 1000000.0)
"""

from __future__ import annotations

from dataclasses import dataclass

from calogen.energies import parse_energy
from calogen.errors import CalogenError
from calogen.generator import Generator

__all__ = ["DEFAULT_ENERGY_RANGE_MEV", "LimitsError", "RequestLimits", "generator_energy_range", "parse_energy_range"]

DEFAULT_ENERGY_RANGE_MEV = (1.0, 1e6)
"""Served range of generators without a training range (simulation engines): 1 MeV to 1 TeV, the
upper end of the CaloChallenge. A GFLASH shower costs about 7 ms at 1 TeV and grows linearly beyond."""

_TRAINING_TOLERANCE = 1e-3
"""Relative margin around a model's training range, as in ``Preprocessor.out_of_range``."""


class LimitsError(CalogenError):
    """A serving limit is set to an impossible value."""


@dataclass(frozen=True)
class RequestLimits:
    """Bounds on what one request may ask of the server.

    Args:
        energy_range: smallest and largest incident energy served, MeV; ``None`` takes the
            generator's own (:func:`generator_energy_range`).
        max_body_bytes: largest HTTP request body as sent (and largest gRPC message).
        max_inflated_bytes: largest HTTP request body after undoing gzip or deflate.
    """

    energy_range: tuple[float, float] | None = None
    max_body_bytes: int = 1 << 20
    max_inflated_bytes: int = 4 << 20

    def __post_init__(self) -> None:
        if self.energy_range is not None:
            low, high = (float(e) for e in self.energy_range)
            if not 0 < low <= high < float("inf"):
                raise LimitsError(f"energy range must satisfy 0 < min <= max < inf (MeV), got {self.energy_range}")
            object.__setattr__(self, "energy_range", (low, high))
        for key in ("max_body_bytes", "max_inflated_bytes"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**31:
                raise LimitsError(f"{key} must be an integer from 1 to 2^31 - 1, got {value!r}")


def generator_energy_range(generator: Generator) -> tuple[float, float]:
    """The energies ``generator`` should be asked for, MeV.

    A trained model (one with a fitted ``preprocessor``) serves its training range with a 0.1 %
    margin; any other generator :data:`DEFAULT_ENERGY_RANGE_MEV`.
    """
    pre = getattr(generator, "preprocessor", None)
    if pre is not None:
        return float(pre.e_min) * (1 - _TRAINING_TOLERANCE), float(pre.e_max) * (1 + _TRAINING_TOLERANCE)
    return DEFAULT_ENERGY_RANGE_MEV


def parse_energy_range(text: str) -> tuple[float, float]:
    """``MIN:MAX`` with units (``1GeV:1TeV``; MeV when none) as ``(min, max)`` MeV."""
    low, sep, high = text.partition(":")
    if not sep:
        raise LimitsError(f"energy range {text!r} must read MIN:MAX, e.g. 1GeV:1TeV")
    return RequestLimits(energy_range=(parse_energy(low), parse_energy(high))).energy_range  # type: ignore[return-value]
