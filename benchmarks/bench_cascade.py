"""Benchmark of the detailed cascade: speed, compile time and the Par04 physics figures.

Run:  NUMBA_CACHE_DIR=.cache/numba .venv/bin/python benchmarks/bench_cascade.py [--showers N]

Prints CPU ms per GeV at 1, 10, 100, 1000 GeV (target <= 2.5 ms/GeV), numba compile time from a cold
cache (a fresh temporary NUMBA_CACHE_DIR, in a subprocess) and from the warm cache, the depth of the shower
maximum (Gamma fit) and the mean depth of the silicon signal against ln(E/Ec), both in X0 of the mixture from
the front, lateral containment, silicon sampling fraction, resolution and the number of non-zero DS2
voxels per shower. Depth figures need a few hundred showers for 0.1 X0 (single showers spread by ~1 X0).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from scipy.optimize import curve_fit
from scipy.special import gammaln

X0_MM, EC_MEV, RM_MM = 4.22, 8.2, 10.9
_FIRST_CALL = (
    "import time; t = time.perf_counter(); from calogen.geometry import Geometry; from calogen.sim.full import FullSimulation; "
    "FullSimulation(Geometry.builtin('tiny')).simulate([100.0], seed=0); print(time.perf_counter() - t)"
)


def first_call_seconds(cache_dir: str) -> tuple[float, float]:
    """(wall, CPU) seconds of import + first shower in a fresh interpreter with ``cache_dir`` as numba cache."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return float(out.stdout.strip().splitlines()[-1]), cpu


def silicon_depth(n_pairs: int) -> np.ndarray:
    """Depth (X0) of the middle of the silicon slab of every W/Si pair."""
    return (1.7 * np.arange(n_pairs) + 1.55) / X0_MM


def shower_max(profile: np.ndarray) -> float:
    """Depth (X0) of the maximum of a Gamma fit to a per-pair silicon profile."""
    depth = silicon_depth(profile.size)

    def gamma_profile(t, a, b, norm):  # type: ignore[no-untyped-def]
        return norm * np.exp((a - 1) * np.log(b * t) - b * t + np.log(b) - gammaln(a))

    (a, b, _), _ = curve_fit(gamma_profile, depth, profile, p0=(4.0, 0.5, profile.sum()))
    return float((a - 1) / b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--showers", type=int, default=20, help="showers at 1 GeV (fewer at higher energies)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as cold:
        wall, cpu = first_call_seconds(cold)
        print(f"compile+first shower, cold cache: {wall:.1f} s wall, {cpu:.1f} s CPU")
    warm = os.environ.get("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), "calogen-bench-numba"))
    first_call_seconds(warm)
    wall, cpu = first_call_seconds(warm)
    print(f"compile+first shower, warm cache: {wall:.2f} s wall, {cpu:.2f} s CPU")

    from calogen.geometry import Geometry, Layer
    from calogen.sim.full import FullSimulation

    probe = Geometry(
        "probe", "electron", 11, tuple(Layer((0.0, RM_MM, 3.5 * RM_MM, 1e5), 1, (1.7 * i, 1.7 * (i + 1))) for i in range(90)), 0.0
    )
    sim, ds2 = FullSimulation(probe), FullSimulation(Geometry.builtin("ds2"))
    sim.simulate([10.0], seed=0)
    ds2.simulate([10.0], seed=0)
    print(f"{'E/GeV':>6} {'N':>4} {'ms/GeV':>7} {'s/shower':>8} {'tmax-ln(E/Ec)':>13} {'<t>-ln(E/Ec)':>12} {'<1RM':>6} {'<3.5RM':>7} {'Si frac':>8} {'sigma/E':>8} {'DS2 hits':>8}")
    for gev in (1, 10, 100, 1000):
        n = max(2, args.showers // gev ** 0.5 if gev < 1000 else args.showers // 10)
        n = int(n)
        energies = np.full(n, gev * 1000.0)
        t0 = time.process_time()
        result = sim.simulate(energies, seed=11)
        cpu = time.process_time() - t0
        s = result.showers.reshape(n, 90, 3).astype(np.float64)
        rings = s.sum(axis=(0, 1))
        total = s.sum(axis=(1, 2))
        profile = s.sum(axis=(0, 2)) / n
        log_y = np.log(gev * 1e3 / EC_MEV)
        hits = (ds2.simulate(energies[: min(n, 10)], seed=12).showers > 0).sum(axis=1).mean()
        print(
            f"{gev:>6} {n:>4} {cpu / n / gev * 1e3:>7.2f} {cpu / n:>8.3f} {shower_max(profile) - log_y:>13.2f} "
            f"{(profile * silicon_depth(90)).sum() / profile.sum() - log_y:>12.2f} "
            f"{rings[0] / rings.sum():>6.3f} {rings[:2].sum() / rings.sum():>7.4f} {np.mean(result.deposit('Si')) / (gev * 1e3):>8.4f} "
            f"{total.std() / total.mean():>8.4f} {hits:>8.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
