"""Physics of the detailed MC on the HGCal-like stack: silicon sampling fraction, shower maximum, containment, hits.

For every incidence (normal, and eta 2.0 at phi = pi/2) and energy, simulates N showers into the ``hgcal-like``
cells (26 layers of 4.5 mm Pb + 3.0 mm Cu + 0.3 mm Si, 12 mm hexagons) and prints one table row:

- ``f_Si``: silicon over all deposits (the sampling fraction), and its spread between showers;
- ``sigma/E``: relative spread of the silicon signal;
- ``t_max``: depth of the maximum of a Gamma density fitted to the mean silicon signal per layer, in layers
  (layer i centred at i + 0.5) and in X0 of the stack;
- ``contained``: all deposits over the incident energy (what does not leak out of 26 layers);
- ``hits``: mean number of cells above 0 per layer (layers 1, 5, 10, 15, 20, 26) and in all;
- ``|x_c|``: largest per-layer |centre of energy| (mm) in the readout frame, layers 1-20 (near 0: the cells
  follow the trajectory);
- ``ms``: simulation time per shower.

With ``--gflash-vs-mc MC.h5 PARAMS.json`` it instead compares GFLASH (uncalibrated ``hgcal_like_parameters()``
and the calibrated PARAMS.json, ``--n`` showers of ``--particle`` at the file's energy and incidence; the MC file
must hold the same particle) with the MC file's mean layer energies: total over E, t_max, mean layer, the largest
relative deviation over layers holding > 1%, chi2 per layer (> 1%) with both samples' standard errors, the largest
deviation of the energy per hexagonal ring, hits.

Usage:
    NUMBA_CACHE_DIR=.cache/numba OMP_NUM_THREADS=1 python benchmarks/bench_hgcal_physics.py --particle gamma \\
        --energies 5 50 500 --n 400 200 40 --seed 1
    python benchmarks/bench_hgcal_physics.py --gflash-vs-mc mc50.h5 gflash_hgcal.json --n 300 --seed 21
    python benchmarks/bench_hgcal_physics.py --gflash-vs-mc mc50_e.h5 gflash_e.json --particle e- --n 1000 --seed 21
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
from scipy.optimize import curve_fit
from scipy.special import gammaln

from calogen.cell_geometry import CellGeometry
from calogen.commands.calibrate_gflash import reference_incidence
from calogen.io import read_showers
from calogen.sim.detector import LayerStack
from calogen.sim.full import FullSimulation
from calogen.sim.gflash import GflashSimulation
from calogen.sim.gflash_params import GflashParameters, hgcal_like_parameters
from calogen.sim.readout import Incidence
from calogen.sim.shower_profiles import profile_agreement

SHOWN_LAYERS = (1, 5, 10, 15, 20, 26)


def _gamma(t: np.ndarray, a: float, b: float, norm: float) -> np.ndarray:
    return norm * np.exp((a - 1) * np.log(b * t) - b * t + np.log(b) - gammaln(a))


def shower_max(profile: np.ndarray) -> float:
    """Depth (layers) of the maximum of a Gamma density fitted to a per-layer profile (layer i at i + 0.5)."""
    t = np.arange(profile.size) + 0.5
    (a, b, _), _ = curve_fit(_gamma, t, profile, p0=(4.0, 0.5, profile.sum()), maxfev=20000)
    return (a - 1) / b


def measure(sim: FullSimulation, geometry: CellGeometry, energy_gev: float, n: int, seed: int) -> dict[str, float | list[float]]:
    """One table row: see the module docstring."""
    t0 = time.perf_counter()
    result = sim.simulate(np.full(n, energy_gev * 1000.0), seed=seed)
    ms = (time.perf_counter() - t0) / n * 1e3
    silicon = result.deposit("Si")
    total = result.material_deposits.sum(axis=1)
    layers = geometry.layer_energies(result.showers)
    hits = np.stack([(result.showers[:, geometry.layer_slice(i)] > 0).sum(axis=1) for i in range(geometry.n_layers)], axis=1)
    weights = result.showers.astype(np.float64)
    x_c = (weights * geometry.cell_x).reshape(n, -1)
    centre = [
        float(x_c[:, geometry.layer_slice(i)].sum() / max(weights[:, geometry.layer_slice(i)].sum(), 1e-12)) for i in range(20)
    ]
    t_max = shower_max(layers.mean(axis=0))
    return {
        "f_si": float(np.mean(silicon / total)),
        "f_si_spread": float(np.std(silicon / total)),
        "resolution": float(np.std(silicon) / np.mean(silicon)),
        "t_max_layers": t_max,
        "t_max_x0": t_max * LAYER_X0,
        "contained": float(np.mean(total / result.available_energy)),
        "hits": [float(hits[:, i - 1].mean()) for i in SHOWN_LAYERS],
        "hits_total": float(hits.sum(axis=1).mean()),
        "centre_max": float(np.max(np.abs(centre))),
        "ms": ms,
    }


def gflash_vs_mc(mc_path: Path, params_path: Path, particle: str, n: int, seed: int) -> None:
    """Print GFLASH (uncalibrated, calibrated) against the MC file's mean layer energies (see the module docstring)."""
    geometry = CellGeometry.builtin("hgcal-like")
    data, incidence = read_showers(mc_path), reference_incidence(mc_path)
    energy = float(data.energies[0, 0])
    samples = {"MC": data.showers}
    for name, params in (("GFLASH uncalibrated", hgcal_like_parameters()), ("GFLASH calibrated", GflashParameters.load(params_path))):
        samples[name] = GflashSimulation(geometry, particle, params, incidence=incidence).sample(np.full(n, energy), seed=seed)
    layers = {k: geometry.layer_energies(v) for k, v in samples.items()}
    ref, ref_err = layers["MC"].mean(0), layers["MC"].std(0) / math.sqrt(len(data))
    keep = ref / ref.sum() > 0.01
    print(f"{particle}, E = {energy / 1000:g} GeV, theta {incidence.theta:.4f} rad, N(MC) = {len(data)}, N(GFLASH) = {n}, seed {seed}")
    print("| sample | sum / E | t_max (layers) | mean layer | max abs dev (layers > 1%) | chi2 / layer | ring max abs dev | hits |")
    print("|---|---|---|---|---|---|---|---|")
    for name, per_layer in layers.items():
        mean, err = per_layer.mean(0), per_layer.std(0) / math.sqrt(len(per_layer))
        chi2 = np.sum((mean - ref)[keep] ** 2 / (err[keep] ** 2 + ref_err[keep] ** 2)) / keep.sum()
        rings = profile_agreement(data.showers, samples[name], geometry).radial
        print(f"| {name} | {samples[name].sum(1).mean() / energy:.3f} | {shower_max(mean):.2f} | "
              f"{(mean * (np.arange(mean.size) + 0.5)).sum() / mean.sum():.2f} | {100 * np.abs(mean / ref - 1)[keep].max():.1f}% | "
              f"{chi2:.1f} | {100 * rings:.1f}% | {(samples[name] > 0).sum(1).mean():.0f} |")  # fmt: skip
    print("mean layer energy (GeV), layers 1-26:")
    for name, per_layer in layers.items():
        print(f"{name:20s}", " ".join(f"{v / 1000:.2f}" for v in per_layer.mean(0)))
    print(f"{'MC standard error':20s}", " ".join(f"{v / 1000:.2f}" for v in ref_err))


STACK = LayerStack.hgcal_like()
LAYER_X0 = 7.8 / STACK.radiation_length()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particle", default="gamma", help="e-, e+ or gamma: the MC run's, or GFLASH's with --gflash-vs-mc")
    parser.add_argument("--energies", type=float, nargs="+", default=[5.0, 50.0, 500.0], help="GeV")
    parser.add_argument("--n", type=int, nargs="+", default=[400, 200, 40], help="showers per energy")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--eta", type=float, default=2.0, help="the inclined run's pseudorapidity")
    parser.add_argument("--phi", type=float, default=math.pi / 2, help="the inclined run's azimuth, rad")
    parser.add_argument("--gflash-vs-mc", nargs=2, type=Path, metavar=("MC.h5", "PARAMS.json"), help="compare GFLASH with an MC file")
    args = parser.parse_args()
    if args.gflash_vs_mc:
        gflash_vs_mc(*args.gflash_vs_mc, particle=args.particle, n=args.n[0], seed=args.seed)
        return
    geometry = CellGeometry.builtin("hgcal-like")
    print(f"stack: {STACK.depth:g} mm, X0 {STACK.radiation_length():.3f} mm, {STACK.depth / STACK.radiation_length():.2f} X0, "
          f"{LAYER_X0:.4f} X0/layer, R_M {STACK.moliere_radius():.2f} mm, Ec {STACK.critical_energy():.2f} MeV")  # fmt: skip
    print("| incidence | E (GeV) | N | f_Si (%) | sigma/E (%) | t_max (layers) | t_max (X0) | contained (%) | "
          f"hits/layer {'/'.join(map(str, SHOWN_LAYERS))} | hits | max abs x_c (mm) | ms/shower |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, incidence in (("normal", Incidence()), (f"eta {args.eta:g}", Incidence.from_eta(args.eta, args.phi))):
        sim = FullSimulation(geometry, args.particle, incidence=incidence, scale=1.0)
        sim.simulate(np.array([1000.0]), seed=0)  # compile outside the timing
        for energy, n in zip(args.energies, args.n, strict=True):
            r = measure(sim, geometry, energy, n, args.seed)
            hits = " / ".join(f"{h:.0f}" for h in r["hits"])  # type: ignore[union-attr]
            print(
                f"| {label} | {energy:g} | {n} | {100 * r['f_si']:.3f} ± {100 * r['f_si_spread']:.3f} | "
                f"{100 * r['resolution']:.1f} | {r['t_max_layers']:.2f} | {r['t_max_x0']:.2f} | {100 * r['contained']:.2f} | "
                f"{hits} | {r['hits_total']:.0f} | {r['centre_max']:.2f} | {r['ms']:.0f} |",
                flush=True,
            )  # fmt: skip


if __name__ == "__main__":
    main()
