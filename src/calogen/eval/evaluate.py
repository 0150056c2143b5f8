"""The evaluation suite: compare generated showers with a reference the way the CaloChallenge does.

``evaluate`` streams each file once for the high-level features (so DS3-size files never sit in memory),
fills every CaloChallenge histogram with its separation power and Wasserstein distance, runs the
classifier two-sample tests on the first ``max_showers_per_side`` showers of each file, FPD/KPD and
precision/recall/density/coverage on the high-level feature vectors, and writes ``metrics.json`` and
``report.html`` into an output directory (each atomically). Histograms, feature vectors, classifier
inputs and FPD/KPD settings follow the official CaloChallenge code; ``metrics.json`` records its version
and every difference in effect under ``conventions`` (:func:`~calogen.eval.settings.conventions`).

A sample may carry per-shower weights (``weights``, e.g. DCTR weights of :mod:`calogen.eval.reweight`,
checked to belong to its file by length and SHA-256): its histograms and separation powers are weighted
(:func:`calogen.eval.histograms.compare_features`), its classifiers train with the weights and report
the weighted AUC and JSD on their test split (:func:`calogen.eval.classifier.run_classifier`), FPD and
KPD fit and compare the weighted sample (weighted bootstrap, :mod:`calogen.eval.distances`), and the
record gives the effective sample size ``(sum w)^2 / sum w^2``. PRDC and the feature families have no
weighted version and are not computed for a weighted sample.

Settings live in :mod:`~calogen.eval.settings`, the record in :mod:`~calogen.eval.record` and its
printed summary in :mod:`~calogen.eval.summary`; this module runs the metrics.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from calogen.cell_geometry import CellGeometry
from calogen.errors import CalogenError
from calogen.eval.record import SampleEvaluation, write_evaluation
from calogen.eval.settings import WEIGHTED_METRICS, EvaluationSettings, conventions
from calogen.features import ShowerFeatures, features_from_file, high_level_vector
from calogen.geometry import Geometry
from calogen.io import ShowerFile

__all__ = ["evaluate", "low_level_from_file"]

log = logging.getLogger(__name__)


def low_level_from_file(path: Path, geometry: Geometry, n: int, threshold: float, chunk_size: int) -> np.ndarray:
    """The low-level classifier inputs of the first ``n`` showers, stacked chunk by chunk into one float32 array."""
    from calogen.eval.classifier_inputs import stack_low_level

    with ShowerFile(path, geometry) as f:
        chunks = ((c.energies, c.showers) for c in f.iter_chunks(chunk_size))
        return stack_low_level(chunks, min(n, f.n_showers), geometry.n_voxels, threshold=threshold)


def _run_classifiers(
    metrics: tuple[str, ...],
    reference: tuple[Path, ShowerFeatures],
    generated: tuple[Path, ShowerFeatures],
    geometry: Geometry,
    settings: EvaluationSettings,
    progress: bool,
    weights: np.ndarray | None = None,
) -> list[Any]:
    kinds = [m for m in ("cls-low", "cls-high", "cnn") if m in metrics]
    if not kinds:
        return []
    from calogen.eval.classifier import run_classifier

    cls_settings = settings.classifier_settings()
    n = settings.max_showers_per_side
    results = []
    low: dict[str, np.ndarray] = {}
    if "cls-low" in kinds or "cnn" in kinds:
        threshold = reference[1].threshold
        low = {k: low_level_from_file(p, geometry, n, threshold, settings.chunk_size) for k, p in (("ref", reference[0]), ("gen", generated[0]))}
    for kind in kinds:
        if kind == "cnn" and not geometry.is_regular:
            log.warning("the 3-D CNN classifier needs a regular geometry; %s is irregular, skipping it", geometry.name)
            continue
        if kind == "cls-high":
            ref_in = high_level_vector(reference[1], columns=settings.high_level_columns)[:n]
            gen_in = high_level_vector(generated[1], columns=settings.high_level_columns)[:n]
        else:  # cls-low and the CNN both read the official low-level vector [log10 E_inc, voxels / E_inc]
            ref_in, gen_in = low["ref"], low["gen"]
        log.info("classifier %s: %d vs %d showers%s", kind, len(ref_in), len(gen_in), ", weighted" if weights is not None else "")
        gen_w = None if weights is None else weights[: len(gen_in)]
        results.append(run_classifier(kind, ref_in, gen_in, cls_settings, geometry=geometry, progress=progress, generated_weights=gen_w))
    return results


def _run_distances(
    metrics: tuple[str, ...],
    reference: ShowerFeatures,
    generated: ShowerFeatures,
    settings: EvaluationSettings,
    weights: np.ndarray | None = None,
) -> dict[str, Any]:
    wanted = [m for m in ("fpd", "kpd", "prdc") if m in metrics]
    if not wanted:
        return {}
    from calogen.eval import distances
    from calogen.eval.prdc import prdc

    vectors = (high_level_vector(f, columns=settings.high_level_columns) for f in (reference, generated))
    ref, gen = distances.scale_by_reference(*vectors)
    seed, adapt = settings.seed, settings.adapt_distances
    out: dict[str, Any] = {}
    if "fpd" in wanted:
        out["fpd"] = distances.fpd(ref, gen, seed=seed, scaled=True, adapt_to_sample_size=adapt, generated_weights=weights)
    if "kpd" in wanted:
        out["kpd"] = distances.kpd(ref, gen, seed=seed, scaled=True, adapt_to_sample_size=adapt, generated_weights=weights)
    if "prdc" in wanted:
        out["prdc"] = prdc(ref, gen, seed=seed, scaled=True)
    return out


def _load_weights(weights: dict[str, str | os.PathLike[str]], samples: dict[str, Path], geometry: Geometry) -> dict[str, Any]:
    """Sample name -> checked :class:`~calogen.eval.weights_file.WeightsFile` (length and SHA-256 of its file)."""
    from calogen.eval.weights_file import weights_for_sample

    unknown = sorted(set(weights) - set(samples))
    if unknown:
        raise CalogenError(f"weights given for unknown sample(s) {unknown}; samples are {sorted(samples)} (label them NAME=PATH)")
    out = {}
    for name, path in weights.items():
        with ShowerFile(samples[name], geometry) as f:
            n = f.n_showers
        out[name] = weights_for_sample(path, samples[name], n)
    return out


def _weighted_histograms(
    ref_features: ShowerFeatures, features: ShowerFeatures, path: Path, weights: np.ndarray, chunk_size: int
) -> list[Any]:
    """Every histogram of ``features`` weighted, the voxel spectrum by streaming ``path`` once more."""
    from calogen.eval.histograms import compare_features, weighted_voxel_counts

    def voxel_counts(edges: np.ndarray) -> np.ndarray:
        with ShowerFile(path, features.geometry) as f:
            chunks = ((c.showers, weights[i * chunk_size : i * chunk_size + len(c)]) for i, c in enumerate(f.iter_chunks(chunk_size)))
            return weighted_voxel_counts(chunks, edges, features.threshold)

    return compare_features(ref_features, features, weights=weights, voxel_counts=voxel_counts)


def evaluate(
    reference: str | os.PathLike[str],
    generated: dict[str, str | os.PathLike[str]],
    geometry: Geometry | CellGeometry,
    out_dir: str | os.PathLike[str],
    *,
    settings: EvaluationSettings = EvaluationSettings(),
    reference_name: str = "reference",
    timing: dict[str, dict[str, float]] | None = None,
    title: str | None = None,
    extra: dict[str, Any] | None = None,
    progress: bool = False,
    weights: dict[str, str | os.PathLike[str]] | None = None,
    features_of: dict[str, ShowerFeatures] | None = None,
) -> dict[str, Any]:
    """Evaluate generated files against a reference and write ``metrics.json`` and ``report.html``.

    Args:
        reference: reference CaloChallenge file (e.g. Geant4 or the detailed MC).
        generated: sample name -> generated file, compared one by one with the reference.
        geometry: readout of all files; a cell geometry runs :func:`calogen.eval.cell_eval.evaluate_cells`.
        out_dir: output directory (created if missing).
        settings: metrics and their settings.
        reference_name: label of the reference in the report.
        timing: sample name -> {"ms/shower b1": value, ...}, shown in the summary if given.
        title: report title.
        extra: further JSON-ready entries for ``metrics.json`` and the report's provenance.
        progress: show progress bars.
        weights: sample name -> weights file of that sample (see the module docstring).
        features_of: file path -> its features, already computed (e.g. per shard on an executor,
            :func:`calogen.eval.sharded_features.features_from_shards`); cylindrical geometries only.

    Returns:
        The metrics record also written to ``metrics.json``.
    """
    if geometry.kind != "cylindrical":  # cell geometries: the HGCal challenge's features and hexagon maps
        from calogen.eval.cell_eval import evaluate_cells

        return evaluate_cells(
            reference, generated, geometry, out_dir, settings=settings, reference_name=reference_name, timing=timing,
            title=title, extra=extra, progress=progress, weights=weights,
        )  # type: ignore[arg-type]
    from calogen.eval.histograms import compare_features

    started = time.perf_counter()
    threshold = geometry.threshold if settings.threshold is None else settings.threshold
    ref_path = Path(reference)
    gen_paths = {name: Path(p) for name, p in generated.items()}
    for path in [ref_path, *gen_paths.values()]:
        ShowerFile(path, geometry).close()  # structural validation of every input before any long work
    sample_weights = _load_weights(weights or {}, gen_paths, geometry)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CalogenError(f"cannot create output directory {out}: {exc.strerror}") from None

    computed: dict[Path, ShowerFeatures] = {Path(p): f for p, f in (features_of or {}).items()}

    def features(path: Path, label: str) -> ShowerFeatures:
        if path not in computed:  # a file evaluated with and without weights is read once
            log.info("features of %s (%s)", label, path)
            computed[path] = features_from_file(path, geometry, threshold=threshold, chunk_size=settings.chunk_size, progress=progress)
        return computed[path]

    ref_features = features(ref_path, reference_name)
    samples: list[SampleEvaluation] = []
    for name, path in gen_paths.items():
        sample = SampleEvaluation(name=name, path=str(path), features=features(path, name), weights=sample_weights.get(name))
        w = None if sample.weights is None else sample.weights.weights
        metrics = settings.metrics if w is None else tuple(m for m in settings.metrics if m in WEIGHTED_METRICS)
        if w is not None and metrics != settings.metrics:
            log.warning("%s is weighted: %s have no weighted version and are skipped for it", name, ", ".join(sorted(set(settings.metrics) - set(metrics))))
        if "hist" in metrics and w is None:
            sample.histograms = compare_features(ref_features, sample.features)
        elif "hist" in metrics:
            sample.histograms = _weighted_histograms(ref_features, sample.features, path, w, settings.chunk_size)
        sample.classifiers = _run_classifiers(metrics, (ref_path, ref_features), (path, sample.features), geometry, settings, progress, w)
        sample.distances = _run_distances(metrics, ref_features, sample.features, settings, w)
        sample.timing = dict((timing or {}).get(name, {}))
        if "families" in metrics:
            from calogen.eval.families import FamilySettings, compare_families

            family_settings = FamilySettings(seed=settings.seed, max_showers_per_side=settings.max_showers_per_side)
            sample.families = compare_families((ref_path, ref_features), (path, sample.features), family_settings)
        samples.append(sample)

    geometry_info = {"name": geometry.name, "n_voxels": geometry.n_voxels, "particle": geometry.particle}
    return write_evaluation(
        out, geometry, geometry_info, threshold, conventions(settings), settings, (reference_name, ref_path, ref_features), samples,
        started=started, title=title, extra=extra,
    )  # fmt: skip
