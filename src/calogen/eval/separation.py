"""Separation power (triangular discrimination) and the 1-D Wasserstein distance.

Separation power of two normalised histograms ``p`` and ``q`` (eq. 15 of arXiv:2009.03796, as in
the CaloChallenge ``evaluate.py``)::

    S = 1/2 * sum_i (p_i - q_i)^2 / (p_i + q_i + 1e-16),   p_i = density_i * width_i

S is 0 for identical histograms and 1 for histograms without common bins. :func:`separation_from_counts`
also defines it where a sample has no entry inside the edges (the official density is then 0/0, NaN):
1 when only one sample is empty in range (nothing of it lies where the other one is), 0 when both are.
Counts may be sums of per-entry weights (:func:`weighted_counts`): a weighted histogram is normalised
by its total weight in range, as ``np.histogram(..., weights=w, density=True)``.

Example:
    >>> import numpy as np
    >>> bins = np.array([0.0, 1.0, 2.0])
    >>> separation_power(np.array([1.0, 0.0]), np.array([0.0, 1.0]), bins)
    1.0
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = [
    "density_from_counts",
    "density_histogram",
    "separation_from_counts",
    "separation_power",
    "sorted_counts",
    "wasserstein",
    "wasserstein_from_counts",
    "wasserstein_sorted",
    "weighted_counts",
]


def density_histogram(values: np.ndarray, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(density, counts)`` of ``values`` on ``bins``, as ``np.histogram(..., density=True)``.

    Values outside the edges are not counted and do not enter the normalisation. A histogram with
    no entry in range gets density 0 (where numpy returns NaN).
    """
    counts, _ = np.histogram(values, bins=bins)
    return density_from_counts(counts, bins), counts


def sorted_counts(sorted_values: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """``np.histogram`` counts of already sorted values (same edge rules: last bin closed)."""
    inner = np.searchsorted(sorted_values, bins[:-1], side="left")
    return np.diff(np.concatenate([inner, np.searchsorted(sorted_values, bins[-1:], side="right")]))


def weighted_counts(values: np.ndarray, weights: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Sum of ``weights`` ``(N,)`` of the ``values`` ``(N,)`` in each bin (``np.histogram`` edge rules),
    ``(B,)`` float64; NaN values are dropped."""
    values, weights = np.asarray(values), np.asarray(weights, np.float64)
    keep = ~np.isnan(values)
    return np.histogram(values[keep], bins=bins, weights=weights[keep])[0].astype(np.float64)


def density_from_counts(counts: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Density of raw (or weighted) ``counts`` ``(B,)`` on ``bins`` ``(B + 1,)``, numpy's ``counts / width / total``."""
    widths = np.array(np.diff(bins), float)
    total = counts.sum()
    if total == 0:
        return np.zeros(counts.shape, np.float64)
    return counts / widths / total


def separation_power(ref_hist: np.ndarray, gen_hist: np.ndarray, bins: np.ndarray) -> float:
    """Separation power of two density histograms on the same ``bins``.

    Args:
        ref_hist: ``(B,)`` reference density (integrates to 1 over ``bins``).
        gen_hist: ``(B,)`` generated density.
        bins: ``(B + 1,)`` bin edges.
    """
    widths = np.diff(bins)
    p, q = ref_hist * widths, gen_hist * widths
    terms = (p - q) ** 2
    terms /= p + q + 1e-16
    return float(0.5 * terms.sum())


def separation_from_counts(ref_counts: np.ndarray, gen_counts: np.ndarray, bins: np.ndarray) -> float:
    """Separation power of raw or weighted counts ``(B,)`` on ``bins`` ``(B + 1,)``: official where both
    have entries, 1 when exactly one has none in range (or zero total weight), 0 when neither has."""
    ref_total, gen_total = float(np.sum(ref_counts)), float(np.sum(gen_counts))
    if ref_total == 0 or gen_total == 0:
        return 0.0 if ref_total == gen_total else 1.0
    return separation_power(density_from_counts(ref_counts, bins), density_from_counts(gen_counts, bins), bins)


def wasserstein(ref_values: np.ndarray, gen_values: np.ndarray, gen_weights: np.ndarray | None = None) -> float:
    """1-D Wasserstein-1 distance between two samples (``scipy.stats.wasserstein_distance``).

    Args:
        ref_values: ``(n,)`` reference values; NaN entries are dropped.
        gen_values: ``(m,)`` generated values; NaN entries are dropped.
        gen_weights: ``(m,)`` weights of the generated values (None: all 1).
    """
    from scipy.stats import wasserstein_distance

    ref_values, gen_values = np.asarray(ref_values, np.float64), np.asarray(gen_values, np.float64)
    keep = ~np.isnan(gen_values)
    weights = None if gen_weights is None else np.asarray(gen_weights, np.float64)[keep]
    return float(wasserstein_distance(ref_values[~np.isnan(ref_values)], gen_values[keep], v_weights=weights))


def wasserstein_sorted(ref_sorted: np.ndarray, gen_sorted: np.ndarray) -> float:
    """:func:`wasserstein` of two sorted, NaN-free, non-empty samples, by one merge pass (linear time).

    ``W1 = sum_k |F_ref(x_k) - F_gen(x_k)| (x_{k+1} - x_k)`` over the merged values ``x_k``; tied
    values add zero-width terms, so the terms are scipy's (summed in order instead of pairwise).
    """
    return float(_merged_w1(np.asarray(ref_sorted, np.float64), np.asarray(gen_sorted, np.float64)))


@nb.njit(cache=True)
def _merged_w1(a: np.ndarray, b: np.ndarray) -> float:  # pragma: no cover - compiled
    """W1 of sorted float64 ``a`` and ``b``: walk the merged order, adding ``|i/n - j/m| * (x_next - x)``."""
    n, m = a.size, b.size
    i = j = 0
    total, previous = 0.0, 0.0
    while i < n or j < m:
        take_a = j == m or (i < n and a[i] <= b[j])
        x = a[i] if take_a else b[j]
        if i + j > 0:
            total += abs(i / n - j / m) * (x - previous)
        previous = x
        if take_a:
            i += 1
        else:
            j += 1
    return total


def wasserstein_from_counts(support: np.ndarray, ref_counts: np.ndarray, gen_counts: np.ndarray) -> float:
    """Wasserstein-1 distance of two distributions given as counts on one sorted support.

    ``W1 = sum_k |F_ref(x_k) - F_gen(x_k)| (x_{k+1} - x_k)`` with the cumulative fractions ``F``;
    equal to ``scipy.stats.wasserstein_distance(support, support, ref_counts, gen_counts)``.

    Args:
        support: ``(K,)`` increasing values.
        ref_counts: ``(K,)`` reference counts (or weights).
        gen_counts: ``(K,)`` generated counts.
    """
    used = (np.asarray(ref_counts) > 0) | (np.asarray(gen_counts) > 0)  # empty points add nothing
    ref_counts, gen_counts = np.asarray(ref_counts)[used], np.asarray(gen_counts)[used]
    ref_cdf = np.cumsum(ref_counts, dtype=np.float64) / np.sum(ref_counts, dtype=np.float64)
    gen_cdf = np.cumsum(gen_counts, dtype=np.float64) / np.sum(gen_counts, dtype=np.float64)
    return float(np.sum(np.abs(ref_cdf - gen_cdf)[:-1] * np.diff(np.asarray(support, np.float64)[used])))
