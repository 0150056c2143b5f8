"""The evaluation record: figures per sample (:class:`SampleEvaluation`) written as ``metrics.json``, with
inputs, settings, conventions and environment, and as ``report.html`` beside it."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from calogen.eval.settings import WEIGHTED_METRICS, EvaluationSettings
from calogen.features import ShowerFeatures
from calogen.io import atomic_path, file_sha256

__all__ = ["SampleEvaluation", "write_evaluation"]

_PACKAGES = ("calogen", "numpy", "scipy", "h5py", "torch", "scikit-learn", "numba")


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


def _environment() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": versions}


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
