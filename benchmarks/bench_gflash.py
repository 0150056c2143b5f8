"""GFLASH speed, and agreement with the detailed Monte Carlo on DS2 after calibration.

Prints the CPU time per shower at 10 GeV, 100 GeV and 1 TeV and the CPU time of one
``readout.voxel_index`` call (the detailed MC's scoring path); then, when ``calogen.sim.full`` is
importable, the largest relative deviations of GFLASH from the detailed MC in the mean longitudinal
profile (layers holding > 1% of the energy), the mean radial profile (bins holding > 1%) and the mean
number of hit voxels, at 10 and 100 GeV, against the goals 5% / 5% / 10%. GFLASH draws
``--gflash-factor`` (default 10) showers per reference shower, so that the comparison's noise is the
reference's own; the largest relative statistical error of the reference's mean energy in the compared
layers is printed beside it (at 10 GeV with 1000 showers, 2.1%: a perfect model would show a worst-layer
deviation of about 3% from the reference's noise alone).

Usage:
    NUMBA_CACHE_DIR=.cache/numba python benchmarks/bench_gflash.py [--mc-showers 300]
        [--reference 10GeV.h5 100GeV.h5] [--save-reference DIR] [--calibrate OUT.json] [--gflash-factor 10]

``--reference`` reuses detailed-MC files (one energy each) instead of simulating them (~1.3 ms per GeV
per shower); ``--calibrate`` refits the parameters on that reference, writes them to OUT.json and
compares with them (this is how ``src/calogen/data/gflash_ds2_electron.json`` is made), otherwise the
packaged ``ds2-electron`` parameters are compared.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from calogen.geometry import Geometry
from calogen.io import ShowerData, ShowerFile, write_showers
from calogen.sim.calibrate import calibrate_gflash
from calogen.sim.gflash import GflashSimulation
from calogen.sim.gflash_params import GflashParameters
from calogen.sim.shower_profiles import profile_agreement

GEOMETRY = Geometry.builtin("ds2")
ENERGIES_GEV = (10, 100)


def speed(params: GflashParameters) -> None:
    """CPU milliseconds per shower at 10, 100 and 1000 GeV."""
    sim = GflashSimulation(GEOMETRY, params=params)
    sim.sample([1000.0], seed=0)  # compile / load the numba cache
    for gev, n in ((10, 400), (100, 100), (1000, 20)):
        cpu, wall = time.process_time(), time.perf_counter()
        sim.sample(np.full(n, gev * 1000.0), seed=1)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        spots = sim.spots(gev * 1000.0, np.random.default_rng(0)).e.size
        print(f"speed {gev:5d} GeV: {1e3 * cpu / n:7.3f} ms/shower CPU ({1e3 * wall / n:7.3f} wall), {spots} spots")


def readout_speed(n: int = 1_000_000) -> None:
    """CPU nanoseconds per ``voxel_index`` call on DS2, at points spread like a shower (|N(0, 15 mm)| radii)."""
    import numba as nb

    from calogen.sim.readout import ReadoutTables, voxel_index

    @nb.njit
    def score_all(z_lo, z_hi, r_edges, n_r, n_alpha, offsets, x, y, z, out):  # type: ignore[no-untyped-def]
        for k in range(x.shape[0]):
            v = voxel_index(z_lo, z_hi, r_edges, n_r, n_alpha, offsets, x[k], y[k], z[k])
            if v >= 0:
                out[v] += 1.0

    t = ReadoutTables.from_geometry(GEOMETRY)
    rng = np.random.default_rng(0)
    r, phi = np.abs(rng.normal(0.0, 15.0, n)), rng.uniform(0.0, 2.0 * np.pi, n)
    args = (t.z_lo, t.z_hi, t.r_edges, t.n_r, t.n_alpha, t.offsets, r * np.cos(phi), r * np.sin(phi), rng.uniform(0, 150, n))
    out = np.zeros(t.n_voxels)
    score_all(*args, out)
    best = min(_cpu(lambda: score_all(*args, out)) for _ in range(5))
    print(f"readout voxel_index: {1e9 * best / n:6.1f} ns/point CPU")


def _cpu(call: Callable[[], object]) -> float:
    """CPU seconds of ``call()``."""
    start = time.process_time()
    call()
    return time.process_time() - start


def reference(args: argparse.Namespace) -> tuple[ShowerData, str] | None:
    """Detailed-MC showers at 10 and 100 GeV, read from --reference or simulated, and their description."""
    if args.reference:
        parts, described = [], []
        for path in args.reference:
            with ShowerFile(path, GEOMETRY) as f:
                parts.append(f.read())
                attrs = ", ".join(f"{k}={v}" for k, v in sorted(f.attrs.items()))
            described.append(f"{Path(path).name} ({len(parts[-1])} showers{', ' + attrs if attrs else ''})")
        data = ShowerData(np.concatenate([p.energies for p in parts]), np.concatenate([p.showers for p in parts]))
        return data, "detailed-MC files " + "; ".join(described)
    if importlib.util.find_spec("calogen.sim.full") is None:
        print("calogen.sim.full is not available: skipping the comparison with the detailed MC")
        return None
    from calogen.sim.full import FullSimulation

    mc = FullSimulation(GEOMETRY, "e-")
    energies = np.repeat(np.array(ENERGIES_GEV, dtype=np.float32) * 1000, args.mc_showers).reshape(-1, 1)
    start = time.process_time()
    showers = mc.sample(energies, seed=2024)
    print(f"detailed MC: {len(energies)} showers in {time.process_time() - start:.0f} s CPU")
    if args.save_reference:
        for gev in ENERGIES_GEV:
            rows = energies[:, 0] == gev * 1000
            write_showers(Path(args.save_reference) / f"mc_{gev}GeV.h5", energies[rows], showers[rows])
    return ShowerData(energies, showers), f"FullSimulation e- on ds2, {args.mc_showers} showers per energy, seed 2024"


def compare(ref: ShowerData, params: GflashParameters, factor: int) -> None:
    """Print the agreement of GFLASH (``factor`` showers per reference shower) with the reference at every reference energy."""
    sim = GflashSimulation(GEOMETRY, params=params)
    for energy in np.unique(ref.energies):
        rows = ref.energies[:, 0] == energy
        generated = sim.sample(np.repeat(ref.energies[rows], factor, axis=0), seed=77)
        agreement = profile_agreement(ref.showers[rows], generated, GEOMETRY)
        layers = GEOMETRY.layer_energies(ref.showers[rows]).astype(np.float64)
        mean = layers.mean(axis=0)
        compared = mean / mean.sum() > 0.01
        noise = float(np.max(layers.std(axis=0)[compared] / np.sqrt(rows.sum()) / mean[compared]))
        verdict = "PASS" if agreement.within(profile=0.05, hits=0.10) else "FAIL"
        print(
            f"{energy / 1000:6.0f} GeV ({rows.sum()} showers, GFLASH x{factor}): longitudinal {agreement.longitudinal:6.1%} "
            f"(goal 5%; reference stat. error up to {noise:.1%}), radial {agreement.radial:6.1%} (goal 5%), "
            f"hits {agreement.hits:6.1%} (goal 10%), total energy {agreement.response:5.1%}  {verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mc-showers", type=int, default=300, help="detailed-MC showers per energy")
    parser.add_argument("--reference", nargs="+", metavar="H5", help="detailed-MC files to use instead of simulating")
    parser.add_argument("--save-reference", metavar="DIR", help="keep the simulated detailed-MC showers here")
    parser.add_argument("--calibrate", metavar="OUT.json", help="refit the parameters on the reference and save them")
    parser.add_argument("--gflash-factor", type=int, default=10, help="GFLASH showers per reference shower in the comparison")
    args = parser.parse_args()

    params = GflashParameters.packaged("ds2-electron")
    speed(params)
    readout_speed()
    found = reference(args)
    if found is None:
        return
    ref, described = found
    if args.calibrate:
        start = time.process_time()
        params = calibrate_gflash(ref, GEOMETRY)
        params = params.with_(provenance=f"{params.provenance}. Reference: {described}. Made with benchmarks/bench_gflash.py --calibrate")
        params.save(args.calibrate)
        print(f"calibrated in {time.process_time() - start:.0f} s CPU -> {args.calibrate}")
    print("uncalibrated (published) parameters:")
    compare(ref, GflashParameters.default(), args.gflash_factor)
    print("calibrated parameters:")
    compare(ref, params, args.gflash_factor)


if __name__ == "__main__":
    main()
