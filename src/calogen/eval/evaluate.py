"""The evaluation suite: compare generated showers with a reference the way the CaloChallenge does.

``evaluate`` streams each file once for the high-level features (so DS3-size files never sit in memory),
fills every CaloChallenge histogram with its separation power and Wasserstein distance, runs the
classifier two-sample tests on the first ``max_showers_per_side`` showers of each file, FPD/KPD and
precision/recall/density/coverage on the high-level feature vectors, and writes ``metrics.json`` and
``report.html`` into an output directory (each atomically). Histograms, feature vectors, classifier
inputs and FPD/KPD settings follow the official CaloChallenge code; ``metrics.json`` records its version
and every difference in effect under ``conventions`` (:func:`conventions`).

A sample may carry per-shower weights (``weights``, e.g. DCTR weights of :mod:`calogen.eval.reweight`,
checked to belong to its file by length and SHA-256): its histograms and separation powers are weighted
(:func:`calogen.eval.histograms.compare_features`), its classifiers train with the weights and report
the weighted AUC and JSD on their test split (:func:`calogen.eval.classifier.run_classifier`), FPD and
KPD fit and compare the weighted sample (weighted bootstrap, :mod:`calogen.eval.distances`), and the
record gives the effective sample size ``(sum w)^2 / sum w^2``. PRDC and the feature families have no
weighted version and are not computed for a weighted sample.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from calogen.cell_geometry import CellGeometry
from calogen.errors import CalogenError
from calogen.features import ShowerFeatures, features_from_file, high_level_vector
from calogen.geometry import Geometry
from calogen.io import ShowerFile, atomic_path, file_sha256

__all__ = [
    "ALL_METRICS", "DEFAULT_METRICS", "EvaluationSettings", "SampleEvaluation", "conventions", "evaluate", "parse_metrics",
]  # fmt: skip

log = logging.getLogger(__name__)

ALL_METRICS: tuple[str, ...] = ("hist", "cls-low", "cls-high", "cnn", "fpd", "kpd", "prdc", "families")
DEFAULT_METRICS: tuple[str, ...] = ALL_METRICS
_PACKAGES = ("calogen", "numpy", "scipy", "h5py", "torch", "scikit-learn", "numba")
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

    def classifier_settings(self) -> Any:
        """The :class:`~calogen.eval.classifier.ClassifierSettings` these settings imply."""
        from calogen.eval.classifier import ClassifierSettings

        base = ClassifierSettings.official() if self.official_classifier else ClassifierSettings()
        return replace(base, seed=self.seed, max_showers_per_side=self.max_showers_per_side)


@dataclass
class SampleEvaluation:
    """All figures for one generated sample against the reference."""

    name: str
    path: str
    features: ShowerFeatures
    histograms: list[Any] = field(default_factory=list)
    classifiers: list[Any] = field(default_factory=list)
    distances: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    families: Any = None  # calogen.eval.families.FamilyComparison
    weights: Any = None  # calogen.eval.weights_file.WeightsFile

    def scalars(self) -> dict[str, tuple[float, float | None]]:
        """FPD, KPD and PRDC figures and the effective sample size of weights as name -> (value, error)."""
        out: dict[str, tuple[float, float | None]] = {}
        if self.weights is not None:
            out["ESS"] = (self._ess(), None)
        for key in ("fpd", "kpd"):
            if key in self.distances:
                d = self.distances[key]
                out[key.upper()] = (d.value, d.error)
        if "prdc" in self.distances:
            for key, value in self.distances["prdc"].to_dict().items():
                if isinstance(value, (int, float)) and key in ("precision", "recall", "density", "coverage"):
                    out[key] = (float(value), None)
        return out

    def _ess(self) -> float:
        from calogen.eval.weights_file import effective_sample_size

        return effective_sample_size(self.weights.weights)

    def _weights_dict(self) -> dict[str, Any] | None:
        if self.weights is None:
            return None
        attrs = self.weights.attrs
        keys = ("method", "reference", "fitted_candidate", "weighting", "calibration", "normalisation", "clip", "clip_value", "n_clipped", "max_weight", "seed")
        recorded = {k: attrs[k] for k in keys if k in attrs}
        if not np.isfinite(recorded.get("clip_value", 0.0)):
            recorded["clip_value"] = None  # clip "none": JSON has no infinity
        return {
            "path": str(self.weights.path), "n": int(self.weights.weights.size), "ess": self._ess(),
            "applied_to": list(WEIGHTED_METRICS), **recorded,
        }  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record of every number and its settings."""
        return {
            "name": self.name,
            "path": self.path,
            "n_showers": self.features.n_showers,
            "histograms": [
                {
                    "name": h.name,
                    "group": h.group,
                    "layer": h.layer,
                    "label": h.label,
                    "n_bins": len(h.bins) - 1,
                    "range": [float(h.bins[0]), float(h.bins[-1])],
                    "log_bins": bool(h.log_x),
                    "separation_power": float(h.separation),
                    "wasserstein": None if h.wasserstein is None else float(h.wasserstein),
                }
                for h in self.histograms
            ],
            "separation_power_summary": _separation_summary(self.histograms),
            "classifiers": [c.to_dict() for c in self.classifiers],
            "distances": {k: v.to_dict() for k, v in self.distances.items()},
            "timing_ms_per_shower": self.timing,
            "families": None if self.families is None else self.families.to_dict(),
            "weights": self._weights_dict(),
        }


def _separation_summary(histograms: list[Any]) -> dict[str, Any]:
    if not histograms:
        return {}
    by_group: dict[str, list[float]] = {}
    for h in histograms:
        by_group.setdefault(h.group, []).append(float(h.separation))
    values = np.array([float(h.separation) for h in histograms])
    worst = histograms[int(np.argmax(values))]
    return {
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "max": float(values.max()),
        "max_histogram": worst.name,
        "mean_by_group": {g: float(np.mean(v)) for g, v in by_group.items()},
    }


def _low_level_from_file(path: Path, geometry: Geometry, n: int, threshold: float, chunk_size: int) -> np.ndarray:
    """The low-level classifier inputs of the first ``n`` showers, stacked chunk by chunk into one float32 array."""
    from calogen.eval.classifier import stack_low_level

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
        low = {k: _low_level_from_file(p, geometry, n, threshold, settings.chunk_size) for k, p in (("ref", reference[0]), ("gen", generated[0]))}
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

    vectors = (high_level_vector(f, columns=settings.high_level_columns) for f in (reference, generated))
    ref, gen = distances.scale_by_reference(*vectors)
    seed, adapt = settings.seed, settings.adapt_distances
    out: dict[str, Any] = {}
    if "fpd" in wanted:
        out["fpd"] = distances.fpd(ref, gen, seed=seed, scaled=True, adapt_to_sample_size=adapt, generated_weights=weights)
    if "kpd" in wanted:
        out["kpd"] = distances.kpd(ref, gen, seed=seed, scaled=True, adapt_to_sample_size=adapt, generated_weights=weights)
    if "prdc" in wanted:
        out["prdc"] = distances.prdc(ref, gen, seed=seed, scaled=True)
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


def _environment() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": versions}


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


def write_evaluation(
    out: Path, geometry: Any, geometry_info: dict[str, Any], threshold: float, conventions_used: dict[str, Any],
    settings: EvaluationSettings, reference: tuple[str, Path, Any], samples: list[SampleEvaluation], *, started: float,
    title: str | None, extra: dict[str, Any] | None, sections: str = "",
) -> dict[str, Any]:  # fmt: skip
    """Assemble the metrics record, write ``metrics.json`` and ``report.html`` into ``out`` (either kind of
    geometry: ``reference`` is ``(name, path, features)``, ``sections`` extra report HTML); returns the record."""
    from calogen.eval.report import SampleReport, render_report

    reference_name, ref_path, ref_features = reference
    record = {
        "calogen_evaluation": 1,
        "geometry": geometry_info,
        "threshold_mev": threshold,
        "conventions": conventions_used,
        "settings": {**asdict(settings), "classifier": _settings_dict(settings) if _uses_classifier(settings) else None},
        "inputs": {
            reference_name: _describe(ref_path, ref_features),
            **{s.name: _describe(Path(s.path), s.features) for s in samples},
        },
        "samples": [s.to_dict() for s in samples],
        "environment": _environment(),
        **(extra or {}),
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1, allow_nan=False, default=_json_default), encoding="utf-8")
    render_report(
        out / "report.html",
        title=title or f"calogen evaluation — {geometry.name}",
        geometry=geometry,
        reference_name=reference_name,
        reference_mean_shower=ref_features.mean_shower,
        samples=[
            SampleReport(s.name, s.histograms, s.features.mean_shower, s.classifiers, s.scalars(), s.timing, s.families)
            for s in samples
        ],
        metadata={"inputs": record["inputs"], "settings": record["settings"], "environment": record["environment"], **(extra or {})},
        sections=sections,
    )
    return record


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


def _uses_classifier(settings: EvaluationSettings) -> bool:
    return any(m in settings.metrics for m in ("cls-low", "cls-high", "cnn"))


def _settings_dict(settings: EvaluationSettings) -> dict[str, Any]:
    return asdict(settings.classifier_settings())


def _describe(path: Path, features: ShowerFeatures) -> dict[str, Any]:
    return {"path": str(path), "sha256": file_sha256(path), "n_showers": features.n_showers}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def summary_rows(record: dict[str, Any]) -> list[tuple[str, ...]]:
    """The summary table as rows of strings (header first), from a metrics record."""
    header = ("metric", *(s["name"] for s in record["samples"]))
    rows: list[tuple[str, ...]] = [header]

    def row(label: str, cells: list[str]) -> None:
        rows.append((label, *cells))

    samples = record["samples"]
    if any(s["separation_power_summary"] for s in samples):
        row("separation power, mean", [_f(s["separation_power_summary"].get("mean")) for s in samples])
        row("separation power, max", [f"{_f(s['separation_power_summary'].get('max'))} ({s['separation_power_summary'].get('max_histogram', '')})" for s in samples])
        groups = sorted({g for s in samples for g in s["separation_power_summary"].get("mean_by_group", {})})
        for g in groups:
            row(f"  S {g}", [_f(s["separation_power_summary"]["mean_by_group"].get(g)) for s in samples])
    kinds = sorted({c["kind"] for s in samples for c in s["classifiers"]})
    for kind in kinds:
        cells = []
        for s in samples:
            c = next((c for c in s["classifiers"] if c["kind"] == kind), None)
            cells.append(f"{c['auc_mean']:.4f} ± {c['auc_std']:.4f}" if c else "–")
        row(f"AUC {kind}", cells)
    families = [{f["family"]: f for f in (s.get("families") or {}).get("families", [])} for s in samples]
    for key in dict.fromkeys(k for fams in families for k in fams):
        row(f"AUC family {key}", [f"{f[key]['auc_mean']:.3f} ± {f[key]['auc_std']:.3f}" if key in f else "–" for f in families])
    for key in ("fpd", "kpd"):
        if any(key in s["distances"] for s in samples):
            row(key.upper(), [f"{_f(s['distances'][key]['value'])} ± {_f(s['distances'][key]['error'])}" if key in s["distances"] else "–" for s in samples])
    if any("prdc" in s["distances"] for s in samples):
        for key in ("precision", "recall", "density", "coverage"):
            row(key, [_f(s["distances"]["prdc"].get(key)) if "prdc" in s["distances"] else "–" for s in samples])
    if any(s.get("weights") for s in samples):
        row("effective sample size (weights)", [_f(s["weights"]["ess"]) if s.get("weights") else "–" for s in samples])
    timing_keys = sorted({k for s in samples for k in s["timing_ms_per_shower"]})
    for key in timing_keys:
        row(key, [_f(s["timing_ms_per_shower"].get(key)) for s in samples])
    return rows


def _f(value: Any) -> str:
    if value is None:
        return "–"
    value = float(value)
    return f"{value:.3e}" if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5) else f"{value:.4g}"


def format_table(rows: list[tuple[str, ...]]) -> str:
    """Render rows as an aligned plain-text table."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
