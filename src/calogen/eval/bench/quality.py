"""Quality figures for the bench plane, read from ``calogen evaluate`` outputs (``metrics.json``).

``--metrics PATH`` attaches every sample of ``PATH`` to the benchmarked generator of the same name;
``--metrics GEN=PATH`` attaches the sample named ``GEN`` (or the only sample) to generator ``GEN``, and
``--metrics GEN=PATH#SAMPLE`` the sample named ``SAMPLE``.

Example:
    >>> parse_metrics_arg("nfe2=eval/metrics.json#model")
    ('nfe2', 'eval/metrics.json', 'model')
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calogen.eval.bench.generators import BenchError

__all__ = ["QUALITY_METRICS", "Quality", "load_quality", "parse_metrics_arg"]

QUALITY_METRICS = ("auc_low", "auc_high", "auc_cnn", "fpd", "kpd")
_CLASSIFIERS = {"cls-low": "auc_low", "cls-high": "auc_high", "cnn": "auc_cnn"}


@dataclass(frozen=True)
class Quality:
    """The figures of one generated sample against its reference.

    Attributes:
        values: metric (:data:`QUALITY_METRICS`) -> ``(value, spread)`` (AUC: mean and std over runs;
            FPD/KPD: value and error); absent metrics are missing.
        source: the metrics file and sample name they came from.
        reference: name, path, sha256 and shower count of the reference the sample was compared with.
        settings: the evaluation settings recorded in the metrics file.
        conventions: which official CaloChallenge code the evaluation followed, and where it differs
            (``None`` for metrics files written before calogen recorded it).
    """

    values: dict[str, tuple[float, float | None]]
    source: dict[str, str]
    reference: dict[str, Any]
    settings: dict[str, Any]
    conventions: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "values": {k: list(v) for k, v in self.values.items()}, "source": self.source,
            "reference": self.reference, "settings": self.settings, "conventions": self.conventions,
        }  # fmt: skip


def parse_metrics_arg(text: str) -> tuple[str | None, str, str | None]:
    """``[GEN=]PATH[#SAMPLE]`` -> (generator name or None, path, sample name or None)."""
    name, sep, rest = text.partition("=")
    if not sep or "/" in name or not name.strip():
        name, rest = "", text
    path, _, sample = rest.partition("#")
    if not path.strip():
        raise BenchError(f"--metrics {text!r}: give the path of a metrics.json written by calogen evaluate")
    return (name.strip() or None, path.strip(), sample.strip() or None)


def _read(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BenchError(f"cannot read metrics file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise BenchError(f"{path} is not valid JSON ({exc}); pass the metrics.json written by calogen evaluate") from None
    if not isinstance(record, dict) or "samples" not in record or "calogen_evaluation" not in record:
        raise BenchError(f"{path} is not a calogen evaluate metrics.json (no 'calogen_evaluation' / 'samples')")
    return record


def _figures(sample: dict[str, Any]) -> dict[str, tuple[float, float | None]]:
    values: dict[str, tuple[float, float | None]] = {}
    for c in sample.get("classifiers", []):
        key = _CLASSIFIERS.get(c.get("kind", ""))
        if key is not None and c.get("auc_mean") is not None:
            values[key] = (float(c["auc_mean"]), None if c.get("auc_std") is None else float(c["auc_std"]))
    for key in ("fpd", "kpd"):
        d = sample.get("distances", {}).get(key)
        if d is not None and d.get("value") is not None:
            values[key] = (float(d["value"]), None if d.get("error") is None else float(d["error"]))
    return values


def _reference(record: dict[str, Any]) -> dict[str, Any]:
    names = {s["name"] for s in record["samples"]}
    inputs = record.get("inputs", {})
    ref = [k for k in inputs if k not in names]
    return {"name": ref[0], **inputs[ref[0]]} if ref else {}


def load_quality(entries: list[str], generators: list[str], *, geometry: str) -> dict[str, Quality]:
    """Quality per generator name from ``--metrics`` entries (see the module docstring).

    Raises:
        BenchError: a file is unreadable, of another geometry, lacks the sample asked for, names an
            unknown generator, or two entries give the same generator.
    """
    out: dict[str, Quality] = {}
    for text in entries:
        target, path_text, wanted = parse_metrics_arg(text)
        path = Path(path_text)
        record = _read(path)
        found = record.get("geometry", {}).get("name")
        if found != geometry:
            raise BenchError(f"{path} evaluates geometry {found!r}, the bench runs {geometry!r}")
        samples = {s["name"]: s for s in record["samples"]}
        if target is None:
            if wanted is not None:
                raise BenchError(f"--metrics {text!r}: a #SAMPLE needs a generator name, GEN={path_text}#{wanted}")
            pairs = [(name, s) for name, s in samples.items() if name in generators]
            if not pairs:
                raise BenchError(
                    f"{path}: none of its samples {sorted(samples)} is a benchmarked generator {generators}; "
                    "name the pairing with --metrics GEN=PATH#SAMPLE"
                )
        else:
            if target not in generators:
                raise BenchError(f"--metrics {text!r}: no generator called {target!r}; benchmarked: {generators}")
            key = wanted or (target if target in samples else next(iter(samples)) if len(samples) == 1 else None)
            if key not in samples:
                raise BenchError(f"{path}: no sample {key or target!r}; it holds {sorted(samples)} (pick one with #SAMPLE)")
            pairs = [(target, samples[key])]
        for name, sample in pairs:
            if name in out:
                raise BenchError(f"two --metrics entries give figures for generator {name!r}")
            out[name] = Quality(
                values=_figures(sample),
                source={"path": str(path), "sample": sample["name"]},
                reference=_reference(record),
                settings=record.get("settings", {}),
                conventions=record.get("conventions"),
            )
    return out
