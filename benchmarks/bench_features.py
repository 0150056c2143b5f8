"""Benchmark: features + every separation power for two streamed CaloChallenge files.

Targets (issue 2): DS2 100k vs 100k in <= 60 s and <= 4 GiB peak RSS on one core; DS3 100k vs 100k
streamed within 8 GiB. Synthetic files (benchmarks/synthetic.py) are written once and cached; each
measurement runs in a fresh process so ``ru_maxrss`` is that of the evaluation alone.

Usage:
    NUMBA_CACHE_DIR=.cache/numba .venv/bin/python benchmarks/bench_features.py --datasets ds2 --n 100000
    .venv/bin/python benchmarks/bench_features.py --datasets ds3 --n 20000 --cache-dir /tmp/calogen-bench
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _files(cache: Path, name: str, n: int) -> tuple[Path, Path]:
    """The cached reference/generated pair, written when missing."""
    from synthetic import write_synthetic_file

    from calogen.geometry import Geometry

    geometry = Geometry.builtin(name)
    cache.mkdir(parents=True, exist_ok=True)
    pair = []
    for role, seed in (("reference", 1), ("generated", 2)):
        path = cache / f"{name}_{role}_{n}.h5"
        if not path.exists():
            t0 = time.perf_counter()
            write_synthetic_file(path, geometry, n, seed, chunk=max(100, 10_000_000 // geometry.n_voxels))
            print(f"  wrote {path} ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t0:.0f} s")
        pair.append(path)
    return pair[0], pair[1]


def _measure(name: str, reference: str, generated: str) -> None:
    """Child process: stream both files, compare, print the figures."""
    from calogen.eval.histograms import compare_features
    from calogen.features import features_from_file
    from calogen.geometry import Geometry

    geometry = Geometry.builtin(name)
    t0 = time.perf_counter()
    ref = features_from_file(reference, geometry)
    t1 = time.perf_counter()
    gen = features_from_file(generated, geometry)
    t2 = time.perf_counter()
    hists = compare_features(ref, gen)
    t3 = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss, cpu = usage.ru_maxrss / 2**20, usage.ru_utime + usage.ru_stime
    worst = max(hists, key=lambda h: h.separation)
    print(
        f"  {name}: {ref.n_showers} vs {gen.n_showers} showers, {len(hists)} histograms | features "
        f"{t1 - t0:.1f} s + {t2 - t1:.1f} s, histograms {t3 - t2:.1f} s, total {t3 - t0:.1f} s wall, "
        f"{cpu:.1f} s CPU (process, imports included) | peak RSS "
        f"{rss:.2f} GiB | exact voxel spectrum: {ref.voxel_spectrum.exact and gen.voxel_spectrum.exact} | "
        f"worst S = {worst.separation:.4f} ({worst.name})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["ds2"], help="built-in geometries (ds2, ds3, ...)")
    parser.add_argument("--n", type=int, default=100_000, help="showers per file")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "calogen-bench")
    parser.add_argument("--measure", nargs=3, metavar=("GEOMETRY", "REFERENCE", "GENERATED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        _measure(*args.measure)
        return
    print(f"free disk in {args.cache_dir.parent}: {shutil.disk_usage(args.cache_dir.parent).free / 2**30:.0f} GiB")
    for name in args.datasets:
        reference, generated = _files(args.cache_dir, name, args.n)
        env = dict(os.environ, NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", ".cache/numba"))
        cmd = [sys.executable, __file__, "--measure", name, str(reference), str(generated)]
        subprocess.run(cmd, check=True, env=env)


if __name__ == "__main__":
    main()
