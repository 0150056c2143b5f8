"""``calogen simulate``: run a built-in simulator (full Monte Carlo or GFLASH) into a CaloChallenge file.

Example:
    calogen simulate --engine gflash --geometry ds2 --particle e- --energy loguniform:1GeV:1TeV \\
        --n 10000 --seed 1 -o ds2_gflash.h5 --workers 4
    calogen simulate ... --shard-index 3 --num-shards 8 -o part-3.h5     # then: calogen merge -o all.h5 part-*.h5
    calogen simulate ... --executor dask --scheduler tcp://host:8786 -o ds2_gflash.h5
    calogen simulate --geometry hgcal-like --particle gamma --eta 2.0 --phi 1.5708 --energy 50GeV --n 100 -o h.h5

Direction: ``--theta DEG`` is the polar angle to the layer normal; ``--eta ETA`` gives it as
``2 atan(exp(-eta))`` (an endcap, whose layers are normal to the beam: eta 2.0 is 15.4 degrees); ``--phi RAD``
is the azimuth. The readout follows the primary's trajectory. Non-normal runs record the direction in the
file (``incident_theta``/``incident_phi`` attributes, the ``incident_directions`` dataset).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from calogen.commands._runs import add_run_arguments, executor_of, shard_of
from calogen.commands._types import positive_int, seed_int

NAME = "simulate"
HELP = "simulate showers with the full Monte Carlo or GFLASH into a CaloChallenge HDF5 file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``calogen simulate``."""
    parser.add_argument("--engine", default="full", help="simulation engine: full (detailed MC) or gflash (default: full)")
    parser.add_argument("--geometry", default="ds2", help="built-in geometry name or CaloChallenge binning XML (default: ds2)")
    parser.add_argument("--particle", default="e-", help="e-, e+ or gamma (or electron, positron, photon; default: e-)")
    parser.add_argument(
        "--energy", required=True, metavar="SPEC", help="incident energies: 10GeV, loguniform:1GeV:1TeV, uniform:A:B, list:A,B"
    )
    parser.add_argument("--n", type=positive_int, required=True, help="number of showers")
    parser.add_argument("--seed", type=seed_int, default=0, help="run seed; shower i uses a seed derived from (seed, i) (default: 0)")
    parser.add_argument("-o", "--output", required=True, metavar="FILE.h5", help="output file, written when complete")
    parser.add_argument(
        "--chunk-size", type=positive_int, default=1000, help="showers per chunk, the unit of checkpointing (default: 1000)"
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run with the same settings")
    parser.add_argument(
        "--max-energy", default="10TeV", metavar="E", help="refuse incident energies above this (default: 10TeV; raise it deliberately)"
    )
    parser.add_argument(
        "--gflash-params",
        metavar="JSON|NAME",
        help="GFLASH parameters: a JSON file (e.g. from calogen calibrate-gflash) or a packaged set, ds2-electron, "
        "hgcal-like-electron or hgcal-like-gamma (default: calibrated to the detailed MC: ds2-electron on cylindrical "
        "geometries; on cell geometries hgcal-like-gamma for photons, hgcal-like-electron for e+-)",
    )
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar (default: when stderr is a terminal)"
    )
    _add_direction_arguments(parser)
    add_run_arguments(parser)


def _add_direction_arguments(parser: argparse.ArgumentParser) -> None:
    """``--theta`` or ``--eta``, ``--phi``, ``--entry``, ``--max-theta``."""
    polar = parser.add_mutually_exclusive_group()
    polar.add_argument("--theta", type=float, metavar="DEG", help="polar angle of the primary to the layer normal, degrees (default: 0)")
    polar.add_argument("--eta", type=float, metavar="ETA", help="pseudorapidity of the primary: theta = 2 atan(exp(-eta))")
    parser.add_argument("--phi", type=float, default=0.0, metavar="RAD", help="azimuth of the primary, radians (default: 0)")
    parser.add_argument(
        "--entry", type=float, nargs=2, default=(0.0, 0.0), metavar=("X", "Y"), help="entry point on the front face, mm (default: 0 0)"
    )
    parser.add_argument("--max-theta", type=float, default=80.0, metavar="DEG", help="largest polar angle accepted, degrees (default: 80)")


def _incidence(args: argparse.Namespace) -> Any:
    """The :class:`~calogen.sim.readout.Incidence` of the direction options (IncidenceError when out of range)."""
    from calogen.sim.readout import Incidence, IncidenceError, theta_from_eta

    if not 0.0 < args.max_theta < 90.0:
        raise IncidenceError(f"--max-theta must lie in (0, 90) degrees, got {args.max_theta:g}")
    if args.eta is not None:
        eta_min = -math.log(math.tan(math.radians(args.max_theta) / 2.0))
        if not (math.isfinite(args.eta) and args.eta > eta_min):
            raise IncidenceError(f"--eta must be > {eta_min:.4f} (theta below --max-theta {args.max_theta:g} degrees), got {args.eta:g}")
        theta = theta_from_eta(args.eta)
    else:
        theta_deg = 0.0 if args.theta is None else args.theta
        if not 0.0 <= theta_deg < args.max_theta:
            raise IncidenceError(f"--theta must lie in [0, {args.max_theta:g}) degrees (--max-theta), got {theta_deg:g}")
        theta = math.radians(theta_deg)
    if not (math.isfinite(args.phi) and abs(args.phi) <= 2.0 * math.pi):
        raise IncidenceError(f"--phi must lie in [-2 pi, 2 pi] radians, got {args.phi:g}")
    return Incidence(theta, args.phi, tuple(args.entry))


def _gflash_parameters(value: str) -> Any:
    """GFLASH parameters from a JSON file, or the packaged set named ``value``."""
    from calogen.sim.gflash_params import GflashParameters

    if value.endswith(".json") or Path(value).exists():
        return GflashParameters.load(value)
    return GflashParameters.packaged(value)


def _count_text(n: int, shard: tuple[int, int] | None) -> str:
    """``n``, or for a shard its rows of the run: ``"3 (rows [3, 6) of 10, shard 1 of 3)"``."""
    if shard is None:
        return str(n)
    from calogen.shards import shard_rows

    start, stop = shard_rows(n, *shard)
    return f"{stop - start} (rows [{start}, {stop}) of {n}, shard {shard[0]} of {shard[1]})"


def run(args: argparse.Namespace) -> int:
    """Validate the request, then simulate; returns 0 on success."""
    from calogen.energies import parse_energy
    from calogen.sim.engines import EngineError, configure_numba_cache, engine_spec

    configure_numba_cache()
    from calogen.sim.run import simulate_to_file

    options: dict[str, Any] = {}
    if args.gflash_params is not None:
        if args.engine != "gflash":
            raise EngineError(f"--gflash-params applies to --engine gflash, not {args.engine!r}; drop it or switch engine")
        options["params"] = _gflash_parameters(args.gflash_params)
    incidence = _incidence(args)
    if not incidence.is_normal:  # normal incidence keeps today's options, and so the same bytes
        options["incidence"] = incidence
    spec = engine_spec(args.engine, args.geometry, args.particle, **options)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    shard = shard_of(args)
    with executor_of(args) as executor:
        path = simulate_to_file(
            spec,
            args.energy,
            args.n,
            args.seed,
            args.output,
            chunk_size=args.chunk_size,
            executor=executor,
            retries=args.retries,
            shard=shard,
            progress=progress,
            resume=args.resume,
            max_energy=parse_energy(args.max_energy),
        )
    print(f"wrote {_count_text(args.n, shard)} {spec.particle} showers ({spec.name}, {spec.geometry.name}) to {path}")
    return 0
