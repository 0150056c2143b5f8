"""Benchmark: features + every separation power for two streamed CaloChallenge files.

Targets (issue 2): DS2 100k vs 100k in <= 60 s and <= 4 GiB peak RSS on one core; DS3 100k vs 100k
streamed within 8 GiB. Synthetic files (benchmarks/synthetic.py) are written once and cached; each
measurement runs in a fresh process so ``ru_maxrss`` is that of the evaluation alone.

``--replicate K`` builds each file from K distinct showers repeated with jittered incident energies
(compressed chunks are copied, see ``synthetic.write_replicated_file``): the way to get 100k DS3 showers
(16 GB of voxels per file) in seconds. Figures: wall time and process CPU time per stage (the CPU time
is the one-core figure on a loaded machine), peak RSS.

Usage:
    NUMBA_CACHE_DIR=.cache/numba .venv/bin/python benchmarks/bench_features.py --datasets ds2 --n 100000
    NUMBA_CACHE_DIR=.cache/numba .venv/bin/python benchmarks/bench_features.py --datasets ds3 --n 100000 \
        --replicate 5000 --delete
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


def _files(cache: Path, name: str, n: int, replicate: int | None) -> tuple[Path, Path]:
    """The cached reference/generated pair, written when missing."""
    from synthetic import write_replicated_file, write_synthetic_file

    from calogen.geometry import Geometry

    geometry = Geometry.builtin(name)
    cache.mkdir(parents=True, exist_ok=True)
    pair = []
    for role, seed in (("reference", 1), ("generated", 2)):
        path = cache / f"{name}_{role}_{n}{f'_x{replicate}' if replicate else ''}.h5"
        if not path.exists():
            t0 = time.perf_counter()
            if replicate:
                write_replicated_file(path, geometry, n, replicate, seed)
            else:
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
    stamps = [(time.perf_counter(), time.process_time())]
    ref = features_from_file(reference, geometry)
    stamps.append((time.perf_counter(), time.process_time()))
    gen = features_from_file(generated, geometry)
    stamps.append((time.perf_counter(), time.process_time()))
    hists = compare_features(ref, gen)
    stamps.append((time.perf_counter(), time.process_time()))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss, cpu = usage.ru_maxrss / 2**20, usage.ru_utime + usage.ru_stime
    wall = [b[0] - a[0] for a, b in zip(stamps, stamps[1:])]
    stage_cpu = [b[1] - a[1] for a, b in zip(stamps, stamps[1:])]
    worst = max(hists, key=lambda h: h.separation)
    print(
        f"  {name}: {ref.n_showers} vs {gen.n_showers} showers, {len(hists)} histograms\n"
        f"    wall: features {wall[0]:.1f} s + {wall[1]:.1f} s, histograms {wall[2]:.1f} s, total {sum(wall):.1f} s\n"
        f"    CPU:  features {stage_cpu[0]:.1f} s + {stage_cpu[1]:.1f} s, histograms {stage_cpu[2]:.1f} s, "
        f"total {sum(stage_cpu):.1f} s; whole process (imports, JIT cache load) {cpu:.1f} s\n"
        f"    peak RSS {rss:.2f} GiB | exact voxel spectrum: {ref.voxel_spectrum.exact and gen.voxel_spectrum.exact} | "
        f"worst S = {worst.separation:.4f} ({worst.name})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["ds2"], help="built-in geometries (ds2, ds3, ...)")
    parser.add_argument("--n", type=int, default=100_000, help="showers per file")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "calogen-bench")
    parser.add_argument("--replicate", type=int, metavar="K", help="build each file from K distinct showers")
    parser.add_argument("--delete", action="store_true", help="delete the files after measuring")
    parser.add_argument("--measure", nargs=3, metavar=("GEOMETRY", "REFERENCE", "GENERATED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        _measure(*args.measure)
        return
    print(f"free disk in {args.cache_dir.parent}: {shutil.disk_usage(args.cache_dir.parent).free / 2**30:.0f} GiB")
    for name in args.datasets:
        reference, generated = _files(args.cache_dir, name, args.n, args.replicate)
        env = dict(os.environ, NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", ".cache/numba"))
        cmd = [sys.executable, __file__, "--measure", name, str(reference), str(generated)]
        subprocess.run(cmd, check=True, env=env)
        if args.delete:
            reference.unlink()
            generated.unlink()


if __name__ == "__main__":
    main()
