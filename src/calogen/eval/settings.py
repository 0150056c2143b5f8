"""What an evaluation computes: metric names, :class:`EvaluationSettings`, and the conventions they imply."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from calogen.errors import CalogenError
from calogen.eval.classifier_settings import ClassifierSettings

__all__ = ["ALL_METRICS", "DEFAULT_METRICS", "WEIGHTED_METRICS", "EvaluationSettings", "conventions", "parse_metrics"]

ALL_METRICS: tuple[str, ...] = ("hist", "cls-low", "cls-high", "cnn", "fpd", "kpd", "prdc", "families")
DEFAULT_METRICS: tuple[str, ...] = ALL_METRICS
WEIGHTED_METRICS: tuple[str, ...] = ("hist", "cls-low", "cls-high", "cnn", "fpd", "kpd")
"""Metrics computed for weighted samples; the others are skipped for them."""


def parse_metrics(text: str) -> tuple[str, ...]:
    """Parse ``hist,cls-low,...`` (or ``all``) into a tuple of metric names."""
    names = ALL_METRICS if text.strip() == "all" else tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in names if m not in ALL_METRICS]
    if unknown or not names:
        raise CalogenError(f"unknown metric(s) {unknown or text!r}; choose from {', '.join(ALL_METRICS)} or 'all'")
    return names


@dataclass(frozen=True)
class EvaluationSettings:
    """What to compute.

    Attributes:
        metrics: subset of :data:`ALL_METRICS`.
        threshold: per-voxel threshold in MeV (default: the geometry's).
        chunk_size: showers read per chunk while streaming.
        seed: seed of every random choice (classifier splits and inits, FPD/KPD resampling; the
            official FPD/KPD seed is 42).
        official_classifier: use the CaloChallenge's published classifier settings (the default; False
            selects calogen's fast standardised network, a named deviation recorded in ``conventions``).
        max_showers_per_side: showers per file loaded for the classifiers.
        high_level_columns: column set of the high-level vector for cls-high, FPD, KPD and PRDC:
            ``"official"`` (362 columns on DS2) or ``"pre-2023"`` (226, not official; see
            :func:`calogen.features.high_level_vector`).
        adapt_distances: scale the FPD batch sizes and cap the KPD batch to the smaller sample (not
            official: the official settings draw 10k-50k rows with replacement whatever the sample size).
    """

    metrics: tuple[str, ...] = DEFAULT_METRICS
    threshold: float | None = None
    chunk_size: int = 5_000
    seed: int = 42
    official_classifier: bool = True
    max_showers_per_side: int = 10_000
    high_level_columns: str = "official"
    adapt_distances: bool = False

    def classifier_settings(self) -> ClassifierSettings:
        """The :class:`~calogen.eval.classifier_settings.ClassifierSettings` these settings imply."""
        base = ClassifierSettings.official() if self.official_classifier else ClassifierSettings()
        return replace(base, seed=self.seed, max_showers_per_side=self.max_showers_per_side)


def conventions(settings: EvaluationSettings) -> dict[str, Any]:
    """Which official code the conventions follow, and every difference from it in effect for ``settings``."""
    from calogen.eval.histograms import OFFICIAL_CODE

    differences = [
        "histograms: separation power 1 when one sample has no entry in range, 0 when neither has (official: NaN)",
        "histograms: DS1 per-energy E ratio only for intervals holding reference showers (official: NaN for others)",
        "classifiers train in float32 (official: float64) with seeded shuffles and initialisation",
        "prdc on the high-level vector of at most 10k showers (official: log10 voxels of all showers)",
    ]
    if not settings.official_classifier:
        differences.append("classifier settings: calogen's fast standardised network (--fast-classifier), not the official one")
    if settings.max_showers_per_side < 100_000:
        differences.append(f"classifiers use at most {settings.max_showers_per_side} showers per side (official: all)")
    if settings.high_level_columns != "official":
        differences.append(f"high-level vector {settings.high_level_columns!r} (official: 'official', 362 columns on DS2)")
    if settings.adapt_distances:
        differences.append("FPD/KPD batch sizes adapted to the sample size (official: 10k-50k and 10k rows)")
    if settings.seed != 42:
        differences.append(f"FPD/KPD resampling seed {settings.seed} (official: 42)")
    return {"official_code": OFFICIAL_CODE, "differences": differences}
