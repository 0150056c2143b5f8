"""Sample distances on feature vectors: FPD and KPD, and the reference scaling of their inputs.

These follow the definitions the CaloChallenge evaluation uses through JetNet's ``fpd`` / ``kpd``
(Kansal et al. 2023, arXiv:2211.10295): every feature column of both samples is divided by the
reference's largest absolute value in that column, FPD is the Fréchet distance of Gaussian fits
extrapolated to infinite sample size, KPD is the unbiased MMD² with a quartic polynomial kernel.
The defaults are the official settings of the CaloChallenge ``evaluate.py`` (2025-01-02):
``jetnet.evaluation.fpd(ref, gen, min_samples=10000)`` (max_samples 50000, 10 points, 20 batches) and
``kpd(ref, gen, batch_size=10000)`` (10 batches), seed 42, batches drawn with replacement from the
given rows whatever their number; with the same ``seed`` the resampling indices are those JetNet
draws. Deliberate difference, off by default: ``adapt_to_sample_size=True`` scales the FPD batch sizes
(and caps the KPD batch) to the smaller sample, so that no batch repeats rows more than necessary.
KPD's estimator is :func:`calogen.eval.mmd.mmd2_polynomial`; precision / recall / density / coverage
on the same scaled vectors are in :mod:`calogen.eval.prdc`.

Every result records the settings it was computed with (after any adaptation to small samples), so
``metrics.json`` says exactly what was measured.

FPD and KPD take optional per-shower ``generated_weights`` (e.g. DCTR weights): batches are drawn
exactly as without weights (uniformly, the same indices for the same seed) and every statistic of a
generated batch is weighted by the weights of its rows (weighted bootstrap): weighted mean and
covariance for FPD, a self-normalised weighted MMD² for KPD. Unit weights give the unweighted result to
float precision; a weighted sample's figures carry the noise of its effective sample size.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ref, gen = rng.normal(size=(3000, 4)), rng.normal(0.5, 1.0, size=(3000, 4))
    >>> value, error = kpd(ref, gen, batch_size=1000)
    >>> value > 5 * error
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import linalg
from scipy.optimize import curve_fit

from calogen.errors import CalogenError
from calogen.eval.mmd import mmd2_polynomial

__all__ = [
    "DistanceError",
    "DistanceResult",
    "check_pair",
    "fpd",
    "frechet_distance",
    "kpd",
    "scale_by_reference",
]


class DistanceError(CalogenError):
    """Feature arrays or distance settings cannot be used."""


@dataclass(frozen=True)
class DistanceResult:
    """A distance ``value`` with its ``error`` and the ``settings`` used; unpacks as ``value, error``."""

    value: float
    error: float
    settings: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[float]:
        return iter((self.value, self.error))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"value", "error", "settings"}``."""
        return {"value": self.value, "error": self.error, "settings": dict(self.settings)}


def _check_weights(weights: np.ndarray | None, n: int) -> np.ndarray | None:
    """Generated-sample weights as float64 ``(n,)``, finite, non-negative and not all zero (None passes)."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise DistanceError(f"generated_weights must have shape ({n},), one per generated shower, got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise DistanceError("generated_weights must be finite and >= 0 with a positive sum")
    return w


def check_pair(reference: np.ndarray, generated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both samples as float64 ``(n, d)`` arrays with the same ``d`` and only finite values."""
    arrays = []
    for name, arr in (("reference", reference), ("generated", generated)):
        arr = np.asarray(arr, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise DistanceError(f"{name} features must have shape (n_showers, n_features), got {arr.shape}")
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise DistanceError(f"{name} features hold {bad} NaN/inf values; drop or fix those showers first")
        arrays.append(arr)
    if arrays[0].shape[1] != arrays[1].shape[1]:
        raise DistanceError(
            f"reference has {arrays[0].shape[1]} features but generated has {arrays[1].shape[1]}; "
            "compute both with the same feature definition"
        )
    return arrays[0], arrays[1]


def scale_by_reference(reference: np.ndarray, generated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Divide every column of both samples by the reference's largest ``|value|`` in that column.

    Columns that are zero throughout the reference are left unscaled.

    Args:
        reference: ``(N, d)`` reference features.
        generated: ``(M, d)`` generated features.

    Returns:
        ``(reference / s, generated / s)`` as float64, with ``s = max_i |reference[i]|`` per column.
    """
    ref, gen = check_pair(reference, generated)
    scale = np.abs(ref).max(axis=0)
    scale[scale == 0] = 1.0
    return ref / scale, gen / scale


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *, eps: float = 1e-6) -> float:
    """Fréchet (2-Wasserstein²) distance between Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``d² = |mu1 - mu2|² + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))`` (Dowson & Landau 1982).
    Singular products are expected (e.g. a feature that is constant in a sample); only if the matrix
    square root is not finite is ``eps`` added to both diagonals. The imaginary part left by round-off
    is dropped, with a ``RuntimeWarning`` when it is not small.

    Args:
        mu1, mu2: ``(d,)`` means.
        sigma1, sigma2: ``(d, d)`` covariances.
        eps: diagonal offset used only when the product is numerically singular.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    with warnings.catch_warnings():  # singular products are expected (constant features); checked below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag, real = np.trace(covmean.imag), np.trace(covmean.real)
        if not (np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3) or abs(imag) <= 1e-3 * abs(real)):
            warnings.warn(
                f"large imaginary part in the Fréchet covariance term (Im {imag:.3g}, Re {real:.3g})",
                RuntimeWarning,
                stacklevel=2,
            )
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _linear(x: np.ndarray, intercept: float, slope: float) -> np.ndarray:
    return intercept + slope * x


def _moments(x: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(d,)`` and covariance ``(d, d)`` of ``x``; weighted: ``sum w x / sum w`` and
    ``sum w (x - mean)(x - mean)^T / (V1 - V2 / V1)`` (``V1 = sum w``, ``V2 = sum w²``), which is
    ``np.cov``'s ``N - 1`` normalisation for unit weights."""
    if weights is None:
        return x.mean(axis=0), np.cov(x, rowvar=False)
    return np.average(x, axis=0, weights=weights), np.cov(x, rowvar=False, aweights=weights)


def _weighting_settings(weights: np.ndarray | None) -> dict[str, Any]:
    """What the settings record says about ``generated_weights``."""
    if weights is None:
        return {"generated_weighted": False}
    ess = float(weights.sum() ** 2 / np.sum(weights**2))
    return {"generated_weighted": True, "generated_ess": ess, "weighting": "weighted bootstrap: uniform draws, row weights"}


def fpd(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    seed: int = 42,
    min_samples: int = 10_000,
    max_samples: int = 50_000,
    num_points: int = 10,
    num_batches: int = 20,
    scaled: bool = False,
    adapt_to_sample_size: bool = False,
    generated_weights: np.ndarray | None = None,
) -> DistanceResult:
    """Fréchet physics distance: the Fréchet distance of Gaussian fits extrapolated to ``1/N -> 0``.

    For ``num_points`` batch sizes evenly spaced in ``1/N`` between ``min_samples`` and ``max_samples``,
    ``num_batches`` pairs of batches are drawn with replacement and their Fréchet distances averaged;
    ``FD(N) = FPD + c / N`` (both >= 0) is fitted by least squares, ``value`` is the intercept and
    ``error`` its standard error from the fit (JetNet's definition; Chong & Forsyth 2020).
    Batches are drawn with replacement, so they may be larger than the samples (official behaviour).

    Batches are resampled from the given rows, so ``1/N -> 0`` reaches the distance between the two
    finite samples, not between their populations: two samples of one distribution keep a floor of
    about ``slope / n_rows`` (about 0.013 for the former 226-column DS2 vector and 100k vs 100k
    showers). Compare samples of equal size and quote the reference-vs-reference value beside a model's.

    With ``generated_weights`` the batches are drawn as without them (same indices for the same seed)
    and a generated batch's Gaussian is fitted with the weights of its rows (weighted mean and
    covariance, :func:`_moments`): a weighted bootstrap, so ``1/N -> 0`` reaches the distance to the
    weighted sample's Gaussian fit. Batches then carry about ``N ESS / n_rows`` effective rows
    (ESS = ``(sum w)² / sum w²``): the slope and the finite-sample floor grow as the ESS falls, so quote
    a floor with the same weights (e.g. permuted on a reference-like sample). Unit weights reproduce
    the unweighted value to float precision. Drawing rows with probability proportional to ``w`` would
    add multinomial noise and change the draws; it is not used.

    Args:
        reference: ``(N, d)`` reference features.
        generated: ``(M, d)`` generated features.
        seed: seed of the resampling.
        min_samples, max_samples: smallest and largest batch size.
        num_points: number of batch sizes (>= 2).
        num_batches: batches averaged per size.
        scaled: the inputs are already divided by :func:`scale_by_reference` (or must not be scaled);
            otherwise that is done here.
        adapt_to_sample_size: if the smaller sample has fewer than ``max_samples`` rows, scale both
            sizes down by the same factor so that the largest batch equals it (not official; recorded).
        generated_weights: ``(M,)`` non-negative weights of the generated showers (e.g. DCTR weights).
    """
    ref, gen = check_pair(reference, generated) if scaled else scale_by_reference(reference, generated)
    weights = _check_weights(generated_weights, len(gen))
    if num_points < 2 or num_batches < 1 or not 2 <= min_samples < max_samples:
        raise DistanceError(
            f"FPD needs num_points >= 2, num_batches >= 1 and 2 <= min_samples < max_samples, got "
            f"num_points={num_points}, num_batches={num_batches}, min_samples={min_samples}, max_samples={max_samples}"
        )
    n = min(len(ref), len(gen))
    hi, lo = max_samples, min_samples
    adapted = adapt_to_sample_size and n < max_samples
    if adapted:
        hi, lo = n, int(min_samples * n / max_samples)
        if lo < 2 or lo >= hi:
            raise DistanceError(f"FPD needs more showers: the smaller sample has only {n}")
    sizes = (1.0 / np.linspace(1.0 / lo, 1.0 / hi, num_points)).astype(np.int64)
    rng = np.random.default_rng(seed)
    means = []
    for size in sizes:
        values = []
        for _ in range(num_batches):
            a = ref[rng.choice(len(ref), size=size)]
            rows = rng.choice(len(gen), size=size)
            values.append(frechet_distance(*_moments(a, None), *_moments(gen[rows], None if weights is None else weights[rows])))
        means.append(float(np.mean(values)))
    params, cov = curve_fit(_linear, 1.0 / sizes, np.asarray(means), bounds=([0.0, 0.0], [np.inf, np.inf]))
    settings = {
        "min_samples": int(lo),
        "max_samples": int(hi),
        "num_points": num_points,
        "num_batches": num_batches,
        "seed": seed,
        "scaled_by_caller": scaled,
        "adapted_to_sample_size": adapted,
        "batch_sizes": [int(s) for s in sizes],
        "mean_fd_per_size": means,
        **_weighting_settings(weights),
    }
    return DistanceResult(float(params[0]), float(np.sqrt(cov[0, 0])), settings)


def kpd(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    seed: int = 42,
    num_batches: int = 10,
    batch_size: int = 10_000,
    scaled: bool = False,
    adapt_to_sample_size: bool = False,
    generated_weights: np.ndarray | None = None,
) -> DistanceResult:
    """Kernel physics distance: median over batches of the unbiased polynomial-kernel MMD².

    Batch ``i`` draws ``batch_size`` rows with replacement from each sample using the generator
    ``default_rng(seed + 1000 i)`` (as JetNet); ``value`` is the median of the ``num_batches`` MMD²
    (:func:`mmd2_polynomial`, degree 4) and ``error`` half the spread between their 16.275th and
    83.725th percentiles. Rows are drawn with replacement, so a batch may exceed a sample (official).

    With ``generated_weights`` the batches are drawn as without them (same indices for the same seed)
    and each batch's MMD² weights the generated rows by their weights (weighted bootstrap, the
    self-normalised weighted U-statistic of :func:`mmd2_polynomial`); unit weights reproduce the
    unweighted value to float precision. The spread over batches then reflects the effective sample
    size of the weights, not ``batch_size``.

    Args:
        reference: ``(N, d)`` reference features.
        generated: ``(M, d)`` generated features.
        seed: seed of the resampling.
        num_batches: number of batches (>= 1).
        batch_size: rows drawn from each sample per batch (>= 2).
        scaled: the inputs are already divided by :func:`scale_by_reference` (or must not be scaled);
            otherwise that is done here.
        adapt_to_sample_size: lower ``batch_size`` to the smaller sample size (not official; recorded).
        generated_weights: ``(M,)`` non-negative weights of the generated showers (e.g. DCTR weights).
    """
    ref, gen = check_pair(reference, generated) if scaled else scale_by_reference(reference, generated)
    weights = _check_weights(generated_weights, len(gen))
    if num_batches < 1 or batch_size < 2:
        raise DistanceError(f"KPD needs num_batches >= 1 and batch_size >= 2, got {num_batches} and {batch_size}")
    size = min(batch_size, len(ref), len(gen)) if adapt_to_sample_size else batch_size
    if min(len(ref), len(gen)) < 2:
        raise DistanceError(f"KPD needs at least 2 showers in each sample, got {len(ref)} and {len(gen)}")
    values = []
    for i in range(num_batches):
        rng = np.random.default_rng(seed + 1000 * i)
        a = ref[rng.choice(len(ref), size=size)]
        rows = rng.choice(len(gen), size=size)
        values.append(mmd2_polynomial(a, gen[rows], y_weights=None if weights is None else weights[rows]))
    low, high = np.percentile(values, [16.275, 83.725])
    settings = {
        "num_batches": num_batches,
        "batch_size": int(size),
        "seed": seed,
        "scaled_by_caller": scaled,
        "adapted_to_sample_size": bool(size < batch_size),
        "kernel": "polynomial degree 4, (x.y/d + 1)^4",
        **_weighting_settings(weights),
    }
    return DistanceResult(float(np.median(values)), float((high - low) / 2.0), settings)
