"""Argument types shared by the subcommands: checked by argparse, so a bad value is a usage error (exit 2).

Example:
    >>> seed_int("7"), positive_int("3"), nonnegative("energy", " MeV")("0.5")
    (7, 3, 0.5)
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["MAX_SEED", "nonnegative", "positive_int", "seed_int"]

MAX_SEED = 2**63 - 1
"""Largest seed: seeds are stored as int64 in output files and hashed into 63-bit child seeds."""


def _integer(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def seed_int(text: str) -> int:
    """A seed: an integer in ``[0, 2**63)``."""
    value = _integer(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must lie in 0..2**63-1 ({MAX_SEED}), got {value}")
    return value


def nonnegative(name: str = "number", unit: str = "") -> Callable[[str], float]:
    """The type of a finite number >= 0, named in its error as ``name`` with ``unit`` (e.g. ``"energy", " MeV"``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value >= 0):
            raise argparse.ArgumentTypeError(f"expected a finite {name} >= 0{unit}, got {text!r}")
        return value

    return parse
