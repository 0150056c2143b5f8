"""Showers per second on one core for the detailed Monte Carlo, GFLASH and the shipped model on DS2, and the
core-hours they imply for 10^6 and 10^8 showers.

Incident energies are log-uniform from 1 GeV to ``--e-max`` (default 100 GeV: the range of the project's DS2
training files and of the shipped model; 1000 GeV is the CaloChallenge DS2 spectrum), taken as the ``n``
quantiles ``exp(ln 1 GeV + (i + 1/2) / n ln(e_max / 1 GeV))`` so that every measurement sees the same mix of
energies (the Monte Carlo's cost grows with the energy); the model's energies are clipped to its training range. Each engine first runs a pilot, which also compiles or warms it; the
shower count is then chosen so that one measurement takes at least ``--min-seconds``, and the measurement
is repeated ``--repeats`` times with different seeds. Rates are showers per CPU-second of this process
(one torch and one numba thread), so other jobs on a shared machine slow the wall clock but not the rate;
wall-clock rates are printed beside them. The model (``--model``, default the packaged ``cpu-small-ds2``)
generates in batches of ``--batch`` at ``--nfe``.

Usage:
    NUMBA_CACHE_DIR=.cache/numba python benchmarks/bench_throughput.py [--engines full gflash model]
        [--e-max 100] [--min-seconds 20] [--repeats 3] [--nfe 2] [--batch 1000] [--json OUT.json]
"""

from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # before numba is imported: one core per measurement
os.environ["OMP_NUM_THREADS"] = "1"

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

PRETRAINED = Path(__file__).resolve().parents[1] / "src" / "calogen" / "data" / "pretrained" / "cpu-small-ds2"
E_MIN_MEV = 1e3
PILOT_SECONDS = 3.0
TARGETS = (10**6, 10**8)

Sampler = Callable[[np.ndarray, int], np.ndarray]
Energies = Callable[[int], np.ndarray]


@dataclass(frozen=True)
class Rate:
    """Showers per CPU-second (mean and half the max-min spread over the repeats) and per wall-second."""

    engine: str
    showers: int
    cpu_rate: float
    cpu_spread: float
    wall_rate: float
    wall_spread: float

    def core_hours(self, n: int) -> float:
        """Core-hours for ``n`` showers at the mean rate."""
        return n / self.cpu_rate / 3600


def quantiles(e_max_mev: float) -> Energies:
    """``n -> `` the ``n`` quantiles ``(n,)`` MeV of the log-uniform spectrum from 1 GeV to ``e_max_mev``."""
    return lambda n: np.exp(np.log(E_MIN_MEV) + (np.arange(n) + 0.5) / n * np.log(e_max_mev / E_MIN_MEV))


def _timed(sample: Sampler, energies: np.ndarray, seed: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    sample(energies, seed)
    return time.process_time() - cpu, time.perf_counter() - wall


def measure(name: str, sample: Sampler, energies_of: Energies, *, min_seconds: float, repeats: int, pilot: int, multiple: int = 1) -> Rate:
    """Rate of ``sample`` on ``energies_of(n)`` over ``repeats`` runs of at least ``min_seconds`` CPU-seconds each
    (``n`` a multiple of ``multiple``)."""
    sample(energies_of(multiple), 0)  # compile / load caches
    while True:
        cpu, _ = _timed(sample, energies_of(pilot), 1)
        if cpu >= PILOT_SECONDS:
            break
        pilot *= 4
    n = multiple * math.ceil(1.3 * min_seconds * pilot / cpu / multiple)  # margin: the pilot's energy mix is coarser
    energies = energies_of(n)
    runs = [_timed(sample, energies, 2 + r) for r in range(repeats)]
    cpu_rates, wall_rates = [n / c for c, _ in runs], [n / w for _, w in runs]
    return Rate(name, n, statistics.mean(cpu_rates), (max(cpu_rates) - min(cpu_rates)) / 2,
                statistics.mean(wall_rates), (max(wall_rates) - min(wall_rates)) / 2)  # fmt: skip


def engine_sampler(name: str) -> Sampler:
    """``(energies, seed) -> showers`` of simulation engine ``name`` on DS2 for electrons."""
    from calogen.sim.engines import make_engine

    engine = make_engine(name, "ds2", "electron")
    return lambda energies, seed: engine.sample(energies, seed=seed)


def model_sampler(path: Path, nfe: int, batch: int) -> Sampler:
    """``(energies, seed) -> showers`` of the model in ``path`` at ``nfe``, in batches of ``batch``."""
    import torch

    from calogen.models import load

    torch.set_num_threads(1)
    model = load(path)
    lo, hi = model.preprocessor.e_min, model.preprocessor.e_max

    def sample(energies: np.ndarray, seed: int) -> np.ndarray:
        e = np.clip(energies, lo, hi)
        return np.concatenate([model.sample(e[s : s + batch], seed=seed + s, nfe=nfe) for s in range(0, e.size, batch)])

    return sample


def _write_json(path: Path, payload: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", nargs="+", choices=("full", "gflash", "model"), default=["full", "gflash", "model"])
    parser.add_argument("--model", type=Path, default=PRETRAINED, help="model directory (default: the packaged cpu-small-ds2)")
    parser.add_argument("--nfe", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--e-max", type=float, default=100.0, help="largest incident energy, GeV (default: 100)")
    parser.add_argument("--min-seconds", type=float, default=20.0, help="CPU-seconds of one measurement (at least)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the rates here")
    args = parser.parse_args()
    rates, energies_of = [], quantiles(args.e_max * 1e3)
    for name in args.engines:
        if name == "model":
            sample, label = model_sampler(args.model, args.nfe, args.batch), f"model {args.model.name} NFE {args.nfe} batch {args.batch}"
            rate = measure(label, sample, energies_of, min_seconds=args.min_seconds, repeats=args.repeats, pilot=args.batch, multiple=args.batch)
        else:
            rate = measure(name, engine_sampler(name), energies_of, min_seconds=args.min_seconds, repeats=args.repeats, pilot=8)
        rates.append(rate)
        hours = "  ".join(f"10^{round(math.log10(n))}: {rate.core_hours(n):,.1f} core-h" for n in TARGETS)
        print(f"{rate.engine:40s} N={rate.showers:6d} x{args.repeats}: {rate.cpu_rate:9.2f} +- {rate.cpu_spread:.2f} showers/CPU-s "
              f"({rate.wall_rate:9.2f} +- {rate.wall_spread:.2f} /wall-s)  {hours}", flush=True)  # fmt: skip
    if args.json:
        _write_json(args.json, {"rates": [{**asdict(r), **{f"core_hours_1e{round(math.log10(n))}": r.core_hours(n) for n in TARGETS}} for r in rates],
                                "settings": {k: str(v) for k, v in vars(args).items()}})  # fmt: skip


if __name__ == "__main__":
    main()
