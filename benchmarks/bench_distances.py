"""Wall time and memory of FPD, KPD and PRDC on DS2-sized high-level feature vectors.

The CaloChallenge high-level vector for DS2 has ``1 + 45 + 4 * 45 = 226`` columns (log incident
energy, log layer energies, eta/phi centres and widths of the 45 layers). The samples are random
Gaussian stand-ins of that shape (generated shifted by 0.02 sigma), since cost depends only on
shape and settings. CPU time is printed beside wall time because a shared machine inflates the
latter. Memory is the tracemalloc peak of numpy allocations during each call, on top of
the input arrays.

Run: ``.venv/bin/python benchmarks/bench_distances.py`` (defaults: 100k vs 100k, 226 features, the
library defaults for every metric); ``--n``, ``--d`` and ``--metrics`` shrink it. On a machine shared
with other jobs, set ``OPENBLAS_NUM_THREADS=1``: spinning BLAS threads multiply the CPU time.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
import tracemalloc

import numpy as np

from calogen.eval import distances
from calogen.eval.prdc import prdc


def _blas() -> str:
    """BLAS library and thread count (oversubscribed BLAS threads inflate CPU time many-fold)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}"
    return ", ".join(f"{p['internal_api']} {p['num_threads']} threads" for p in threadpool_info())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="showers per sample")
    parser.add_argument("--d", type=int, default=226, help="features per shower (DS2 high-level vector: 226)")
    parser.add_argument("--metrics", default="fpd,kpd,prdc", help="comma-separated subset of fpd,kpd,prdc")
    parser.add_argument("--prdc-max-samples", type=int, default=10_000, help="PRDC subsample size (0: all rows)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    reference = rng.normal(size=(args.n, args.d)).astype(np.float32)
    generated = (rng.normal(size=(args.n, args.d)) + 0.02).astype(np.float32)
    ref, gen = distances.scale_by_reference(reference, generated)
    print(f"{args.n} vs {args.n} showers x {args.d} features; inputs {2 * ref.nbytes / 2**20:.0f} MiB as float64")
    print(f"cpu: {os.cpu_count()} logical, {platform.processor() or platform.machine()}; numpy {np.__version__}; {_blas()}")

    calls = {
        "fpd": lambda: distances.fpd(ref, gen, seed=args.seed, scaled=True),
        "kpd": lambda: distances.kpd(ref, gen, seed=args.seed, scaled=True),
        "prdc": lambda: prdc(ref, gen, seed=args.seed, scaled=True, max_samples=args.prdc_max_samples or None),
    }
    for name in args.metrics.split(","):
        tracemalloc.start()
        start, cpu_start = time.perf_counter(), time.process_time()
        result = calls[name]()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        data = result.to_dict()
        settings = {k: v for k, v in data.pop("settings").items() if k not in ("batch_sizes", "mean_fd_per_size")}
        values = ", ".join(f"{k}={v:.4g}" for k, v in data.items())
        print(f"{name:5s} {seconds:7.1f} s wall {cpu_seconds:7.1f} s cpu   peak {peak / 2**20:7.0f} MiB   {values}   {settings}")
    print(f"max RSS of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")


if __name__ == "__main__":
    main()
