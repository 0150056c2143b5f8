"""Wall-clock cost of any Generator: milliseconds per shower at several batch sizes, with the machine it ran on.

For every batch size the harness makes warm-up calls (not timed; they absorb compilation, allocation
and caches), then timed calls of exactly that many incident energies until enough showers and seconds
are collected, and reports the median and the 16-84 % spread of the per-call ms/shower. Each batch
size has a wall-clock budget: when a single call would not fit in it (a detailed Monte Carlo at
batch 10000), the showers per call are capped and the result says so.

Example:
    >>> import numpy as np
    >>> from calogen.geometry import Geometry
    >>> class Flat:
    ...     geometry = Geometry.builtin("tiny")
    ...     def sample(self, energies, *, seed, batch_size=None):
    ...         e = np.asarray(energies, dtype=np.float32).reshape(-1, 1)
    ...         return np.repeat(e / self.geometry.n_voxels, self.geometry.n_voxels, axis=1)
    >>> result = time_generator(Flat(), energies="10GeV", batch_sizes=(1, 100), min_seconds=0.01)
    >>> [b.batch_size for b in result.batches], result.n_parameters
    ([1, 100], 0)
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from calogen.energies import EnergySpec
from calogen.errors import CalogenError
from calogen.generator import Generator, derive_seed

__all__ = ["BatchTiming", "TimingError", "TimingResult", "count_parameters", "environment_info", "time_generator"]


class TimingError(CalogenError):
    """Timing settings are invalid or the generator returned showers of the wrong shape."""


@dataclass(frozen=True)
class BatchTiming:
    """Timing at one batch size; times per shower in milliseconds.

    Attributes:
        batch_size: the batch size asked for.
        showers_per_call: energies actually passed per call (below ``batch_size`` only when ``capped``).
        n_calls: timed calls (warm-up excluded).
        n_showers: showers generated in the timed calls.
        ms_per_shower_median, ms_per_shower_p16, ms_per_shower_p84, ms_per_shower_min, ms_per_shower_max:
            statistics of the per-call ``1000 * seconds / showers_per_call``.
        timed_seconds: wall time of the timed calls.
        warmup_seconds: wall time of the warm-up calls.
        capped: the showers per call were reduced to stay within the time budget.
        note: why a budget cut the measurement short, empty otherwise.
        cpu_ms_per_shower_median: median per-call process CPU time per shower (all threads); below the
            wall time when other work competed for the CPU, above it when several threads ran.
    """

    batch_size: int
    showers_per_call: int
    n_calls: int
    n_showers: int
    ms_per_shower_median: float
    ms_per_shower_p16: float
    ms_per_shower_p84: float
    ms_per_shower_min: float
    ms_per_shower_max: float
    timed_seconds: float
    warmup_seconds: float
    capped: bool = False
    note: str = ""
    cpu_ms_per_shower_median: float | None = None


@dataclass(frozen=True)
class TimingResult:
    """Timings of one generator at several batch sizes, its parameter count and the machine."""

    generator: str
    n_parameters: int
    energies: str
    batches: tuple[BatchTiming, ...]
    environment: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        out = asdict(self)
        out["batches"] = [asdict(b) for b in self.batches]
        return out


def count_parameters(obj: object) -> int:
    """Number of trainable-or-not parameters of the torch modules an object holds.

    Rule: if ``obj`` is a ``torch.nn.Module``, its parameters; otherwise the modules yielded by its
    ``modules()`` method (when it has one) plus every instance attribute that is a module or a
    list / tuple / dict of modules (one level, no deeper search). A parameter shared by several
    modules counts once. Objects holding no torch module (or with torch never imported) give 0.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return 0
    module_type = torch.nn.Module
    if isinstance(obj, module_type):
        modules: list[Any] = [obj]
    else:
        modules = []
        if callable(getattr(obj, "modules", None)):
            modules.extend(m for m in obj.modules() if isinstance(m, module_type))  # type: ignore[attr-defined]
        for value in getattr(obj, "__dict__", {}).values():
            items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
            modules.extend(m for m in items if isinstance(m, module_type))
    unique = {id(p): p for m in modules for p in m.parameters()}
    return int(sum(p.numel() for p in unique.values()))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment_info() -> dict[str, Any]:
    """The machine and thread settings a timing depends on: CPU model and count, torch/numba threads, GPU."""
    import numba
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(),
        "gpu": gpu,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "numba": numba.__version__,
        "platform": platform.platform(),
    }


def _energy_spec(energies: EnergySpec | str | float) -> EnergySpec:
    if isinstance(energies, EnergySpec):
        return energies
    if isinstance(energies, str):
        return EnergySpec.parse(energies)
    value = float(energies)
    if not value > 0:
        raise TimingError(f"incident energy must be > 0 MeV, got {energies!r}")
    return EnergySpec("fixed", (value,))


def _call(generator: Generator, spec: EnergySpec, n: int, seed: int, index: int, cpu: list[float] | None = None) -> float:
    """Seconds taken by call ``index`` of ``sample`` with ``n`` energies (drawn untimed); checks the output.

    The process CPU seconds of the call are appended to ``cpu`` when given.
    """
    energies = spec.sample(n, seed=derive_seed(derive_seed(seed, 0), index))
    seed = derive_seed(derive_seed(seed, 1), index)
    cpu_start, start = time.process_time(), time.perf_counter()
    showers = generator.sample(energies, seed=seed, batch_size=len(energies))
    seconds = time.perf_counter() - start
    if cpu is not None:
        cpu.append(time.process_time() - cpu_start)
    if np.shape(showers)[0] != len(energies):
        raise TimingError(
            f"{type(generator).__name__}.sample returned {np.shape(showers)[0]} showers for {len(energies)} energies"
        )
    return seconds


def time_generator(
    generator: Generator,
    *,
    energies: EnergySpec | str | float,
    batch_sizes: tuple[int, ...] = (1, 100, 10_000),
    warmup: int = 1,
    min_repeats: int = 3,
    min_showers: int = 1000,
    min_seconds: float = 1.0,
    max_seconds: float = 60.0,
    max_showers_per_call: int | None = None,
    seed: int = 0,
) -> TimingResult:
    """Measure ms per shower of ``generator.sample`` at each batch size (smallest first).

    At each size: ``warmup`` untimed calls, then timed calls until at least ``min_repeats`` calls,
    ``min_showers`` showers and ``min_seconds`` of timed work, or until ``max_seconds`` (warm-up included)
    have passed. When the ms/shower measured at the previous size predicts that the warm-up plus one
    call would exceed ``max_seconds``, the showers per call are capped to fit (``capped`` in the result);
    ``max_showers_per_call`` caps them explicitly. Energies are drawn from ``energies`` with seeds
    derived from ``seed`` outside the timed region.

    Args:
        generator: any object with ``geometry`` and ``sample(energies, *, seed, batch_size)``.
        energies: incident energies: an :class:`EnergySpec`, its text (``"loguniform:1GeV:1TeV"``) or MeV.
        batch_sizes: showers per ``sample`` call to time.
        warmup: untimed calls before timing each batch size.
        min_repeats, min_showers, min_seconds: how much timed work is wanted per batch size.
        max_seconds: wall-clock budget per batch size, warm-up included.
        max_showers_per_call: optional hard cap on the energies per call.
        seed: run seed; call ``i`` draws its energies and its sample seed from seeds derived from it and ``i``.
    """
    spec = _energy_spec(energies)
    sizes = sorted(set(int(b) for b in batch_sizes))
    if not sizes or sizes[0] < 1:
        raise TimingError(f"batch sizes must be positive integers, got {tuple(batch_sizes)}")
    if warmup < 0 or min_repeats < 1 or max_seconds <= 0 or (max_showers_per_call is not None and max_showers_per_call < 1):
        raise TimingError(
            f"need warmup >= 0, min_repeats >= 1, max_seconds > 0 and max_showers_per_call >= 1, got warmup={warmup}, "
            f"min_repeats={min_repeats}, max_seconds={max_seconds}, max_showers_per_call={max_showers_per_call}"
        )
    environment = environment_info()
    call_index = 0
    estimate_s: float | None = None  # seconds per shower from the previous batch size
    results = []
    for size in sizes:
        per_call = size if max_showers_per_call is None else min(size, max_showers_per_call)
        if estimate_s is not None and (warmup + 1) * estimate_s * per_call > max_seconds:
            per_call = max(1, min(per_call, int(max_seconds / ((warmup + 1) * estimate_s))))
        capped = per_call < size
        start = time.perf_counter()
        for _ in range(warmup):
            _call(generator, spec, per_call, seed, call_index)
            call_index += 1
        warmup_seconds = time.perf_counter() - start
        times: list[float] = []
        cpu_times: list[float] = []
        note = ""
        while True:
            times.append(_call(generator, spec, per_call, seed, call_index, cpu_times))
            call_index += 1
            enough = len(times) >= min_repeats and len(times) * per_call >= min_showers and sum(times) >= min_seconds
            if enough:
                break
            if time.perf_counter() - start >= max_seconds:
                note = f"stopped by the {max_seconds:g} s budget after {len(times)} timed calls"
                break
        if capped:
            note = f"capped to {per_call} showers per call to fit the {max_seconds:g} s budget" + (f"; {note}" if note else "")
        ms = 1000.0 * np.asarray(times) / per_call
        p16, median, p84 = np.percentile(ms, [16.0, 50.0, 84.0])
        results.append(
            BatchTiming(
                batch_size=size,
                showers_per_call=per_call,
                n_calls=len(times),
                n_showers=len(times) * per_call,
                ms_per_shower_median=float(median),
                ms_per_shower_p16=float(p16),
                ms_per_shower_p84=float(p84),
                ms_per_shower_min=float(ms.min()),
                ms_per_shower_max=float(ms.max()),
                timed_seconds=float(sum(times)),
                warmup_seconds=float(warmup_seconds),
                capped=capped,
                note=note,
                cpu_ms_per_shower_median=float(np.median(cpu_times)) * 1000.0 / per_call,
            )
        )
        estimate_s = float(median) / 1000.0
    settings = {
        "warmup": warmup,
        "min_repeats": min_repeats,
        "min_showers": min_showers,
        "min_seconds": min_seconds,
        "max_seconds": max_seconds,
        "max_showers_per_call": max_showers_per_call,
        "seed": seed,
    }
    return TimingResult(
        generator=type(generator).__name__,
        n_parameters=count_parameters(generator),
        energies=f"{spec.kind}:{','.join(f'{v:g}' for v in spec.values)} MeV",
        batches=tuple(results),
        environment=environment,
        settings=settings,
    )
