"""The timing plan of ``calogen bench``: every generator at every batch size on CPU, and on GPU when present.

Each generator is built, counted (parameters of its torch modules) and timed with
:func:`calogen.eval.timing.time_generator` under one budget per batch size, so a slow generator at
batch 10000 (the detailed Monte Carlo) is timed on fewer showers per call and says so. On a machine
with CUDA, model generators are timed again with their networks on the GPU (:class:`ModelOnDevice`);
GFLASH, the detailed MC and external commands have no GPU path and are recorded as such. The threads
used are set before timing (``threads``) and recorded with the machine, and the load averages before
and after each generator's CPU timing say how much other work competed for the CPU.

Example:
    >>> from calogen.geometry import Geometry
    >>> from calogen.eval.bench.generators import parse_generator
    >>> settings = BenchSettings(batch_sizes=(1, 10), min_showers=10, min_seconds=0.0, budget_s=5.0)
    >>> rows = time_all([parse_generator("gflash")], Geometry.builtin("tiny"), settings, particle="e-")
    >>> [b["batch_size"] for b in rows[0]["timing"]["cpu"]["batches"]]
    [1, 10]
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

from calogen.eval.bench.generators import BenchError, GeneratorSpec, ModelOnDevice, build_generator
from calogen.geometry import Geometry

__all__ = ["BenchSettings", "gpu_name", "load_timings", "make_record", "settings_dict", "time_all"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchSettings:
    """How to time.

    Attributes:
        batch_sizes: showers per ``sample`` call.
        energies: incident-energy specification the timed calls draw from.
        budget_s: wall-clock budget per generator and batch size (warm-up included).
        min_seconds, min_showers, min_repeats, warmup: timed work wanted per batch size (see
            :func:`~calogen.eval.timing.time_generator`).
        seed: timing seed (energies and sample seeds).
        threads: torch and numba CPU threads (None: leave them as they are).
        gpu: also time model generators on CUDA when it is available.
    """

    batch_sizes: tuple[int, ...] = (1, 100, 10_000)
    energies: str = "loguniform:1GeV:100GeV"
    budget_s: float = 60.0
    min_seconds: float = 1.0
    min_showers: int = 1000
    min_repeats: int = 3
    warmup: int = 1
    seed: int = 0
    threads: int | None = None
    gpu: bool = True

    def __post_init__(self) -> None:
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise BenchError(f"batch sizes must be positive integers, got {self.batch_sizes}")
        if not self.budget_s > 0 or self.min_seconds < 0 or self.min_showers < 1 or self.min_repeats < 1 or self.warmup < 0:
            raise BenchError(
                f"need budget > 0 s, min seconds >= 0, min showers >= 1, repeats >= 1, warm-up >= 0; got {self.budget_s}, "
                f"{self.min_seconds}, {self.min_showers}, {self.min_repeats}, {self.warmup}"
            )
        if self.threads is not None and self.threads < 1:
            raise BenchError(f"--threads must be >= 1, got {self.threads}")


def gpu_name() -> str | None:
    """The first CUDA device's name, or None when torch sees no GPU."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    import numba
    import torch

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)


def _load() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other work competing for the CPU), None where unknown."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _time(generator: Any, settings: BenchSettings) -> dict[str, Any]:
    from calogen.eval.timing import time_generator

    result = time_generator(
        generator,
        energies=settings.energies,
        batch_sizes=tuple(settings.batch_sizes),
        warmup=settings.warmup,
        min_repeats=settings.min_repeats,
        min_showers=settings.min_showers,
        min_seconds=settings.min_seconds,
        max_seconds=settings.budget_s,
        seed=settings.seed,
    )
    return result.to_dict()


def time_all(specs: list[GeneratorSpec], geometry: Geometry, settings: BenchSettings, *, particle: str) -> list[dict[str, Any]]:
    """Build and time every generator; one JSON-ready row each (name, spec, description, parameters, timings).

    Every generator is built before any is timed, so a bad specification fails in seconds.
    """
    from calogen.eval.timing import count_parameters

    _set_threads(settings.threads)
    built = [(spec, *build_generator(spec, geometry, particle=particle)) for spec in specs]
    gpu = gpu_name() if settings.gpu else None
    rows = []
    for spec, generator, description in built:
        log.info("timing %s on CPU", spec.name)
        load_before = _load()
        timing: dict[str, Any] = {"cpu": _time(generator, settings), "gpu": None}
        load = {"before": load_before, "after_cpu": _load()}
        gpu_note = "no GPU on this machine" if gpu is None and settings.gpu else "GPU timing switched off" if not settings.gpu else ""
        if gpu is not None:
            if spec.kind == "model":
                log.info("timing %s on %s", spec.name, gpu)
                timing["gpu"] = _time(ModelOnDevice(generator.model, "cuda"), settings)
            else:
                gpu_note = f"{spec.kind} has no GPU implementation"
        rows.append(
            {
                "name": spec.name,
                "spec": spec.text,
                "description": description,
                "n_parameters": count_parameters(generator),
                "timing": timing,
                "load_average": load,
                "gpu_note": gpu_note,
            }
        )
    return rows


def settings_dict(settings: BenchSettings) -> dict[str, Any]:
    """JSON-ready settings."""
    return asdict(settings)


def make_record(
    rows: list[dict[str, Any]],
    quality: dict[str, Any],
    geometry: Geometry,
    settings: BenchSettings,
    *,
    plane: tuple[str, int],
    published: Any | None,
    machine: dict[str, Any] | None = None,
    clock: str = "wall",
) -> dict[str, Any]:
    """The JSON-ready bench record: timings, quality, plane choice, published entries and the machine.

    ``machine`` (``{"environment", "gpu"}``) describes where ``rows`` were timed; default: this machine.
    ``clock`` is the time drawn on the plane: ``wall`` or the process ``cpu`` time.
    """
    from calogen.eval.timing import environment_info

    device, batch = plane
    if batch not in settings.batch_sizes:
        raise BenchError(f"the plane's batch size {batch} is not among the timed ones {tuple(settings.batch_sizes)}")
    if clock not in ("wall", "cpu"):
        raise BenchError(f"the plane's clock must be 'wall' or 'cpu', got {clock!r}")
    if machine is None:
        machine = {"environment": environment_info(), "gpu": gpu_name() if settings.gpu else None}
    return {
        "calogen_bench": 1,
        "geometry": geometry.name,
        "settings": settings_dict(settings),
        "environment": machine["environment"],
        "gpu": machine["gpu"],
        "generators": rows,
        "quality": {name: q.to_dict() for name, q in quality.items()},
        "plane": {"device": device, "batch_size": batch, "clock": clock},
        "published": None if published is None else published.to_dict(),
    }


def load_timings(path: str, *, geometry: str) -> tuple[list[dict[str, Any]], BenchSettings, dict[str, Any]]:
    """Rows, settings and machine of an earlier ``bench.json``, to draw them again with other quality figures."""
    import json
    from pathlib import Path

    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise BenchError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise BenchError(f"{path} is not valid JSON ({exc}); pass a bench.json written by calogen bench") from None
    if not isinstance(record, dict) or record.get("calogen_bench") != 1:
        raise BenchError(f"{path} is not a bench.json written by calogen bench")
    if record["geometry"] != geometry:
        raise BenchError(f"{path} timed geometry {record['geometry']!r}, not {geometry!r}")
    values = dict(record["settings"])
    values["batch_sizes"] = tuple(values["batch_sizes"])
    return record["generators"], BenchSettings(**values), {"environment": record["environment"], "gpu": record["gpu"]}
