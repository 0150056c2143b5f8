"""Precision, recall, density and coverage of a generated sample (Naeem et al. 2020, arXiv:2002.09797).

Computed on feature vectors (calogen: the high-level vector of at most 10k showers per side, scaled
as for FPD/KPD by :func:`calogen.eval.distances.scale_by_reference`) in memory blocks, so that no
``N x N`` matrix is ever held. The official ``prdc`` mode of the CaloChallenge ``evaluate.py`` instead
compares ``log10`` of the voxels (zeros set to 0.1 MeV) with all showers and k=5.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> result = prdc(rng.normal(size=(400, 3)), rng.normal(size=(400, 3)))
    >>> 0.5 < result.precision <= 1.0 and 0.5 < result.coverage <= 1.0
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calogen.eval.distances import DistanceError, check_pair, scale_by_reference

__all__ = ["PRDCResult", "prdc"]

_BLOCK_ELEMENTS = 1 << 23  # 64 MiB of float64 per temporary block


@dataclass(frozen=True)
class PRDCResult:
    """Precision, recall, density and coverage (each in [0, 1], density may exceed 1) and the settings used."""

    precision: float
    recall: float
    density: float
    coverage: float
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of the four values and ``settings``."""
        return {
            "precision": self.precision,
            "recall": self.recall,
            "density": self.density,
            "coverage": self.coverage,
            "settings": dict(self.settings),
        }


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _sq_distances(a: np.ndarray, a_norms: np.ndarray, b: np.ndarray, b_norms: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``(len(a), len(b))``, clipped at zero."""
    out = a_norms[:, None] + b_norms[None, :] - 2.0 * (a @ b.T)
    return np.maximum(out, 0.0, out=out)


def _knn_sq_radius(x: np.ndarray, k: int, block_elements: int) -> np.ndarray:
    """Squared distance from each row of ``x`` to its ``k``-th nearest other row, ``(n,)``."""
    norms = _sq_norms(x)
    rows = max(1, block_elements // len(x))
    out = np.empty(len(x))
    for start in range(0, len(x), rows):
        stop = min(start + rows, len(x))
        dist = _sq_distances(x[start:stop], norms[start:stop], x, norms)
        dist[np.arange(stop - start), np.arange(start, stop)] = -1.0  # self sorts first
        out[start:stop] = np.partition(dist, k, axis=1)[:, k]
    return out


def prdc(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    k: int = 5,
    max_samples: int | None = 10_000,
    seed: int = 0,
    scaled: bool = False,
    block_elements: int = _BLOCK_ELEMENTS,
) -> PRDCResult:
    """Precision, recall, density and coverage with ``k``-nearest-neighbour balls (Naeem et al. 2020).

    With ``B_k(x)`` the ball around ``x`` reaching its ``k``-th nearest neighbour in its own sample,
    reference ``r_i`` (N) and generated ``g_j`` (M):
    precision = ``mean_j [exists i: g_j in B_k(r_i)]``, recall = ``mean_i [exists j: r_i in B_k(g_j)]``,
    density = ``mean_j sum_i [g_j in B_k(r_i)] / k``, coverage = ``mean_i [min_j |r_i - g_j| < radius_k(r_i)]``.
    Distances are Euclidean, computed in blocks of at most ``block_elements`` float64 values.

    Args:
        reference: ``(N, d)`` reference features.
        generated: ``(M, d)`` generated features.
        k: neighbour rank of the balls (``k < min(N, M)``).
        max_samples: each sample is randomly subsampled (without replacement) to at most this many
            rows; ``None`` uses all rows (cost ``O((N + M)² d)``).
        seed: seed of the subsampling.
        scaled: the inputs are already divided by :func:`scale_by_reference` (or must not be scaled);
            otherwise that is done here.
        block_elements: largest temporary distance block, in float64 elements (memory bound).
    """
    ref, gen = check_pair(reference, generated) if scaled else scale_by_reference(reference, generated)
    if max_samples is not None and max_samples < 2:
        raise DistanceError(f"max_samples must be >= 2 or None, got {max_samples}")
    rng = np.random.default_rng(seed)
    if max_samples is not None and len(ref) > max_samples:
        ref = ref[np.sort(rng.choice(len(ref), size=max_samples, replace=False))]
    if max_samples is not None and len(gen) > max_samples:
        gen = gen[np.sort(rng.choice(len(gen), size=max_samples, replace=False))]
    if not 1 <= k < min(len(ref), len(gen)):
        raise DistanceError(f"k must be between 1 and {min(len(ref), len(gen)) - 1} for these samples, got {k}")
    ref_radius = _knn_sq_radius(ref, k, block_elements)
    gen_radius = _knn_sq_radius(gen, k, block_elements)
    ref_norms, gen_norms = _sq_norms(ref), _sq_norms(gen)
    inside_count = np.zeros(len(gen), dtype=np.int64)  # reference balls containing g_j
    recalled = np.zeros(len(ref), dtype=bool)
    covered = np.zeros(len(ref), dtype=bool)
    rows = max(1, block_elements // len(gen))
    for start in range(0, len(ref), rows):
        stop = min(start + rows, len(ref))
        dist = _sq_distances(ref[start:stop], ref_norms[start:stop], gen, gen_norms)
        in_ref_ball = dist < ref_radius[start:stop, None]
        inside_count += in_ref_ball.sum(axis=0)
        covered[start:stop] = in_ref_ball.any(axis=1)
        recalled[start:stop] = (dist < gen_radius[None, :]).any(axis=1)
    settings = {
        "k": k,
        "n_reference": len(ref),
        "n_generated": len(gen),
        "max_samples": max_samples,
        "seed": seed,
        "scaled_by_caller": scaled,
        "metric": "euclidean",
    }
    return PRDCResult(
        precision=float(np.mean(inside_count > 0)),
        recall=float(np.mean(recalled)),
        density=float(np.mean(inside_count) / k),
        coverage=float(np.mean(covered)),
        settings=settings,
    )
