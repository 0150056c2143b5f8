"""The published CaloChallenge 2022 results, packaged as data, for the quality-vs-time plane.

``data/calochallenge_results_2022.json`` holds, per dataset (``ds1-photons``, ``ds1-pions``, ``ds2``,
``ds3``), one entry per submission (and the Geant4-vs-Geant4 baseline): classifier AUCs (low-level,
high-level, CNN) with their spread over runs, FPD and KPD (stored as published, times 1000), PRDC,
generation time per shower on CPU and GPU at batch sizes 1, 100 and 10000 (milliseconds, as the
magnitudes show; the source does not state the unit) and parameter counts. Missing figures are ``null``.

All of them were measured against the official Geant4 datasets with the official evaluation code: a
calogen model's figures are comparable with them only when it was evaluated against the same official
reference files.

The file was made by :func:`results_from_csv` from the CSV conversion of the
``final_results/CaloChallenge_results_*.hdf`` files of the public CaloChallenge/homepage repository.

Reference: M. Faucci Giannelli, C. Krause et al., "Fast Calorimeter Simulation Challenge 2022",
arXiv:2410.21611.

Example:
    >>> table = published_results("ds2")
    >>> table.entries[0].name, table.entries[0].is_reference
    ('GEANT4', True)
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from calogen.errors import CalogenError

__all__ = [
    "CITATION",
    "DATASETS",
    "PublishedEntry",
    "PublishedError",
    "PublishedResults",
    "packaged_document",
    "published_results",
    "results_from_csv",
]

CITATION = (
    'M. Faucci Giannelli, C. Krause et al., "Fast Calorimeter Simulation Challenge 2022", arXiv:2410.21611'
)
DATA_FILE = "calochallenge_results_2022.json"
DATASETS: dict[str, str] = {"ds1-photons": "ds1_photons", "ds1-pions": "ds1_pions", "ds2": "ds2", "ds3": "ds3"}
"""calogen geometry name -> stem of the published CSV file."""
BATCH_SIZES = (1, 100, 10_000)
_PAIRS = {
    "auc_low": "binary cls low",
    "auc_high": "binary cls high",
    "auc_cnn": "binary cls cnn",
    "fpd_1e3": "FPD * 1e3",
    "kpd_1e3": "KPD * 1e3",
}
_SINGLES = ("precision", "recall", "density", "coverage")


class PublishedError(CalogenError):
    """The published results are missing, unreadable or do not cover the dataset asked for."""


@dataclass(frozen=True)
class PublishedEntry:
    """One submission of one dataset; ``None`` where the figure was not published.

    Attributes:
        id, name: submission number and name as published.
        figures: ``auc_low``, ``auc_high``, ``auc_cnn``, ``fpd_1e3``, ``kpd_1e3`` -> ``(value, std)``.
        prdc: ``precision``, ``recall``, ``density``, ``coverage``.
        time_ms: ``("cpu" | "gpu", batch size)`` -> ``(ms per shower, std)``.
        parameters_training, parameters_generation: parameter counts.
    """

    id: int
    name: str
    figures: dict[str, tuple[float, float | None] | None]
    prdc: dict[str, float | None]
    time_ms: dict[tuple[str, int], tuple[float, float | None] | None]
    parameters_training: int | None
    parameters_generation: int | None

    @property
    def is_reference(self) -> bool:
        """The Geant4-vs-Geant4 baseline row."""
        return self.name.strip().upper() == "GEANT4"

    def quality(self, metric: str) -> tuple[float, float | None] | None:
        """``auc_low``, ``auc_high``, ``auc_cnn`` or ``fpd`` / ``kpd`` (converted to calogen's unit, not x1e3)."""
        if metric in ("fpd", "kpd"):
            pair = self.figures.get(f"{metric}_1e3")
            return None if pair is None else (pair[0] / 1e3, None if pair[1] is None else pair[1] / 1e3)
        return self.figures.get(metric)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in the data file."""
        return {
            "id": self.id,
            "name": self.name,
            **{k: None if v is None else list(v) for k, v in self.figures.items()},
            **self.prdc,
            "time_ms": {
                device: {str(b): _list(self.time_ms.get((device, b))) for b in BATCH_SIZES} for device in ("cpu", "gpu")
            },
            "parameters_training": self.parameters_training,
            "parameters_generation": self.parameters_generation,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PublishedEntry:
        """Inverse of :meth:`to_dict`."""
        times = data.get("time_ms", {})
        return cls(
            id=int(data["id"]),
            name=str(data["name"]),
            figures={k: _pair(data.get(k)) for k in _PAIRS},
            prdc={k: data.get(k) for k in _SINGLES},
            time_ms={(d, b): _pair(times.get(d, {}).get(str(b))) for d in ("cpu", "gpu") for b in BATCH_SIZES},
            parameters_training=data.get("parameters_training"),
            parameters_generation=data.get("parameters_generation"),
        )


@dataclass(frozen=True)
class PublishedResults:
    """All published entries of one dataset with their citation."""

    dataset: str
    entries: tuple[PublishedEntry, ...]
    citation: str = CITATION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (as in the data file, plus the dataset and citation)."""
        return {"dataset": self.dataset, "citation": self.citation, "entries": [e.to_dict() for e in self.entries]}


def _list(pair: tuple[float, float | None] | None) -> list[float | None] | None:
    return None if pair is None else list(pair)


def _pair(value: Any) -> tuple[float, float | None] | None:
    if value is None:
        return None
    return (float(value[0]), None if value[1] is None else float(value[1]))


def _number(text: str | None) -> float | None:
    """A CSV cell as a finite float, or None for an empty, non-numeric or non-finite cell."""
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _count(text: str | None) -> int | None:
    value = _number(text)
    return None if value is None else int(round(value))


def _with_std(row: dict[str, str], column: str) -> tuple[float, float | None] | None:
    value = _number(row.get(column))
    return None if value is None else (value, _number(row.get(f"{column} std")))


def results_from_csv(path: str | os.PathLike[str]) -> list[PublishedEntry]:
    """Entries of one published results CSV (one row per submission; list-valued JSON columns are ignored).

    Raises:
        PublishedError: the file is missing or lacks the ``submission id`` / ``submission name`` columns.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PublishedError(f"cannot read published results {path}: {exc}") from None
    if not rows or not {"submission id", "submission name"} <= set(rows[0]):
        raise PublishedError(f"{path} is not a CaloChallenge results table (no 'submission id' / 'submission name' columns)")
    entries = []
    for row in rows:
        ident = _count(row["submission id"])
        if ident is None:
            raise PublishedError(f"{path}: submission {row['submission name']!r} has no numeric id")
        entries.append(
            PublishedEntry(
                id=ident,
                name=row["submission name"].strip(),
                figures={key: _with_std(row, column) for key, column in _PAIRS.items()},
                prdc={key: _number(row.get(key)) for key in _SINGLES},
                time_ms={(d, b): _with_std(row, f"time {d.upper()} {b}") for d in ("cpu", "gpu") for b in BATCH_SIZES},
                parameters_training=_count(row.get("Parameters training")),
                parameters_generation=_count(row.get("Parameters generation")),
            )
        )
    return entries


def packaged_document(csv_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The data-file document built from the four published CSV files in ``csv_dir``."""
    datasets = {name: [e.to_dict() for e in results_from_csv(Path(csv_dir) / f"{stem}.csv")] for name, stem in DATASETS.items()}
    return {
        "citation": CITATION,
        "source": "final_results/CaloChallenge_results_*.hdf of the CaloChallenge/homepage repository, via their CSV conversion",
        "units": {
            "auc_*": "ROC AUC, [mean, std over runs]",
            "fpd_1e3, kpd_1e3": "FPD and KPD times 1000, [value, std]",
            "time_ms": "ms per shower at batch size 1, 100, 10000 on CPU and GPU, [mean, std]",
        },
        "reference": "all figures against the official Geant4 datasets with the official evaluation code",
        "datasets": datasets,
    }


def published_results(dataset: str) -> PublishedResults:
    """The packaged published entries of ``dataset`` (``ds1-photons``, ``ds1-pions``, ``ds2`` or ``ds3``)."""
    if dataset not in DATASETS:
        raise PublishedError(f"no published CaloChallenge results for {dataset!r}; choose one of {', '.join(DATASETS)}")
    try:
        text = resources.files("calogen").joinpath("data", DATA_FILE).read_text(encoding="utf-8")
        document = json.loads(text)
    except (OSError, ValueError) as exc:
        raise PublishedError(f"the packaged {DATA_FILE} cannot be read ({exc}); reinstall calogen") from None
    entries = tuple(PublishedEntry.from_dict(e) for e in document["datasets"][dataset])
    return PublishedResults(dataset, entries, document.get("citation", CITATION))
