"""Clipping and normalising DCTR weights (:mod:`calogen.eval.reweight`, step 4).

:class:`ClipRule` says where extreme weights are cut: at a percentile, at a fixed maximum of the mean-1 weights
(scaled and capped together so that the result has mean 1 and that maximum exactly), or at the largest maximum
that keeps the effective sample size at or above a fraction of N. :func:`clip_and_normalise` applies a rule
within each equal-count bin of incident energy and scales every bin to mean 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from calogen.eval.weights_file import ReweightError, effective_sample_size

__all__ = ["ClipRule", "clip_and_normalise"]


@dataclass(frozen=True)
class ClipRule:
    """Where extreme weights are cut: ``p99.9`` (a percentile of the mean-1 weights), ``20`` (a fixed
    maximum of the mean-1 weights), ``ess0.5`` (the largest maximum that keeps the effective sample size
    at or above that fraction of N; no clip when the weights already do) or ``none``.

    Example:
        >>> ClipRule.parse("p99"), ClipRule.parse("20").kind, ClipRule.parse("ess0.5").value
        (ClipRule(kind='percentile', value=99.0), 'max', 0.5)
    """

    kind: Literal["percentile", "max", "ess", "none"]
    value: float | None = None

    @classmethod
    def parse(cls, text: str) -> ClipRule:
        """Parse ``pQ`` (0 < Q <= 100), a number > 1, ``essF`` (0 < F < 1), or ``none``."""
        text = str(text).strip().lower()
        if text == "none":
            return cls("none")
        if text.startswith("ess"):
            fraction = _number(text[3:])
            if 0 < fraction < 1:
                return cls("ess", fraction)
            raise ReweightError(f"bad clip {text!r}: essF needs an effective-sample-size fraction 0 < F < 1, such as ess0.5")
        value = _number(text[1:] if text.startswith("p") else text)
        if text.startswith("p") and 0 < value <= 100:
            return cls("percentile", value)
        if not text.startswith("p") and math.isfinite(value) and value > 1:
            return cls("max", value)
        raise ReweightError(
            f"bad clip {text!r}: give a percentile such as p99.9, a maximum weight above 1 such as 20, "
            "an effective-sample-size fraction such as ess0.5, or none"
        )

    def apply(self, weights: np.ndarray) -> tuple[np.ndarray, int, float]:
        """Clipped weights with mean 1, the number clipped and their level (inf: none clipped)."""
        w = np.asarray(weights, np.float64) / np.mean(weights)
        if self.kind == "none":
            return w, 0, math.inf
        if self.kind == "percentile":
            level = float(np.percentile(w, self.value))
            n_clipped = int(np.count_nonzero(w > level))
            w = np.minimum(w, level)
            return w / w.mean(), n_clipped, level / w.mean()
        if self.kind == "ess":
            return _cap_to_ess(w, float(self.value))  # type: ignore[arg-type]
        return _cap(w, float(self.value))  # type: ignore[arg-type]


def _number(text: str) -> float:
    """``float(text)``, NaN when it is not a number."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def _cap(w: np.ndarray, c: float) -> tuple[np.ndarray, int, float]:
    """``min(s w, c)`` with the scale ``s`` that gives mean 1 (``c > 1``), the number capped, and ``c``
    (inf when none is capped). With the ``k`` largest capped, ``s = (N - k c) / (sum of the others)``;
    the answer is the smallest ``k`` whose ``s`` leaves the ``k+1``-th largest at or below ``c``."""
    n = w.size
    ordered = np.sort(w)[::-1]
    rest = np.cumsum(ordered[::-1])[::-1]  # rest[k]: sum of all but the k largest
    k = np.arange(n)
    scale = (n - k * c) / rest
    ok = (n - k * c > 0) & (scale * ordered <= c)
    first = int(np.argmax(ok))
    capped = np.minimum(scale[first] * w, c)
    return capped, first, (c if first else math.inf)


def _cap_to_ess(w: np.ndarray, fraction: float, steps: int = 60) -> tuple[np.ndarray, int, float]:
    """:func:`_cap` at the largest maximum ``c`` whose weights keep ``ESS >= fraction * N`` (bisection: the
    effective sample size falls as ``c`` grows and is ``N`` at ``c = 1``); unchanged mean-1 weights when
    they already keep it."""
    target = fraction * w.size
    if effective_sample_size(w) >= target:
        return w, 0, math.inf
    low, high = 1.0, float(w.max())
    for _ in range(steps):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if effective_sample_size(_cap(w, mid)[0]) >= target else (low, mid)
    return _cap(w, low)


def _energy_bins(energies: np.ndarray | None, n_bins: int, n: int) -> np.ndarray:
    """Bin index of every shower: equal-count bins of ``energies`` (tied edges merge bins); all 0 without."""
    if energies is None or n_bins == 1:
        return np.zeros(n, np.int64)
    e = np.asarray(energies, np.float64).reshape(-1)
    if e.shape != (n,):
        raise ReweightError(f"{e.size} incident energies for {n} candidate showers; give one per shower")
    inner = np.unique(np.quantile(e, np.linspace(0.0, 1.0, n_bins + 1))[1:-1])
    return np.searchsorted(inner, e, side="right")


def clip_and_normalise(
    log_w: np.ndarray, rule: ClipRule, energies: np.ndarray | None, n_bins: int
) -> tuple[np.ndarray, int, float]:
    """Weights from log-weights, clipped by ``rule`` and scaled to mean 1 within each energy bin; with the
    clipped count and the largest clip level."""
    raw = np.exp(log_w - np.max(log_w))  # largest 1: no overflow
    bins = _energy_bins(energies, n_bins, raw.size)
    weights, n_clipped, levels = np.empty_like(raw), 0, []
    for b in np.unique(bins):
        rows = bins == b
        weights[rows], k, level = rule.apply(raw[rows])
        n_clipped += k
        levels.append(level if k else -math.inf)
    return weights, n_clipped, max(levels) if n_clipped else math.inf
