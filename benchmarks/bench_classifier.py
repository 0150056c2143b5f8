"""Cost of the classifier two-sample test with default settings on DS2-shaped showers, one CPU thread.

Reference and "generated" samples are toy DS2 showers (benchmarks/synthetic.py); the generated ones
have their depth profile shifted by 0.01 of the calorimeter, a small mis-modelling. For each kind the
script prints CPU seconds (process time: what one uncontended core would take), wall seconds, the
AUC/JSD reached, the epochs trained, and the worst case where every run trains for all
``settings.epochs`` epochs (CPU time per trained epoch, fixed costs included, times the maximum).

Usage:
    NUMBA_CACHE_DIR=.cache/numba .venv/bin/python benchmarks/bench_classifier.py [--n 10000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import synthetic_energies, synthetic_showers  # noqa: E402

from calogen.eval.classifier import run_classifier  # noqa: E402
from calogen.eval.classifier_inputs import low_level_inputs  # noqa: E402
from calogen.eval.classifier_settings import KINDS, ClassifierResult, ClassifierSettings  # noqa: E402
from calogen.features import compute_features, high_level_vector  # noqa: E402
from calogen.geometry import Geometry  # noqa: E402


def make_sample(geometry: Geometry, n: int, seed: int, depth_shift: float) -> tuple[np.ndarray, np.ndarray]:
    """``n`` toy showers, made 2000 at a time: energies ``(n,)`` and showers ``(n, voxels)`` float32."""
    rng = np.random.default_rng(seed)
    energies = synthetic_energies(geometry, n, rng)
    chunks = [energies[i : i + 2000] for i in range(0, n, 2000)]
    showers = np.concatenate([synthetic_showers(geometry, e, rng, depth_shift=depth_shift) for e in chunks])
    return energies, showers


def timed(
    kind: str, ref: np.ndarray, gen: np.ndarray, settings: ClassifierSettings, geometry: Geometry
) -> tuple[ClassifierResult, float, float]:
    """Run the test; returns the result, CPU seconds and wall seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = run_classifier(kind, ref, gen, settings, geometry=geometry)
    return result, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="showers per side")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated classifier kinds")
    args = parser.parse_args()

    geometry = Geometry.builtin("ds2")
    settings = ClassifierSettings(num_threads=1)
    t0 = time.perf_counter()
    samples = [make_sample(geometry, args.n, seed, shift) for seed, shift in ((1, 0.0), (2, 0.01))]
    low = [low_level_inputs(e, s) for e, s in samples]
    high = [high_level_vector(compute_features(e, s, geometry)) for e, s in samples]
    print(f"made {args.n} vs {args.n} DS2 showers and inputs in {time.perf_counter() - t0:.0f} s wall", flush=True)
    print(f"settings: {settings}", flush=True)

    total_cpu = total_worst = 0.0
    for kind in args.kinds.split(","):
        ref, gen = high if kind == "cls-high" else low
        result, cpu, wall = timed(kind, ref, gen, settings, geometry)
        epoch_cpu = cpu / sum(result.epochs_trained)
        worst = epoch_cpu * settings.epochs * settings.n_runs
        total_cpu += cpu
        total_worst += worst
        print(
            f"{kind:8s} d={ref.shape[1]:5d}  AUC {result.auc_mean:.3f} +- {result.auc_std:.3f}  "
            f"JSD {result.jsd_mean:.3f} +- {result.jsd_std:.3f}  "
            f"epochs best/trained {result.best_epochs}/{result.epochs_trained}  "
            f"CPU {cpu:6.1f} s  wall {wall:6.1f} s  {epoch_cpu:5.1f} s CPU/epoch  "
            f"worst case ({settings.epochs} epochs x {settings.n_runs} runs) {worst:6.1f} s CPU",
            flush=True,
        )
    print(f"total CPU {total_cpu:.1f} s (worst case {total_worst:.1f} s); budget 600 s")


if __name__ == "__main__":
    main()
