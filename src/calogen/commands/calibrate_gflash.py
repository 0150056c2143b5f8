"""``calogen calibrate-gflash``: fit GFLASH parameters to reference showers and save them as JSON.

Example:
    calogen simulate --engine full --geometry ds2 --energy list:10GeV,100GeV --n 400 -o mc.h5
    calogen calibrate-gflash mc.h5 --geometry ds2 -o gflash_ds2.json
    calogen simulate --engine gflash --gflash-params gflash_ds2.json --energy 50GeV --n 1000 -o g.h5
    calogen simulate --engine full --geometry hgcal-like --particle gamma --eta 2.0 --phi 1.5708 \
        --energy list:5GeV,20GeV,50GeV,100GeV --n 800 -o hg.h5
    calogen calibrate-gflash hg.h5 --geometry hgcal-like --particle gamma -o gflash_hgcal.json

The reference's incidence (``incident_theta``/``incident_phi`` attributes written by ``calogen simulate``)
is read from the file.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import TYPE_CHECKING

from calogen.commands._types import positive_int, seed_int

if TYPE_CHECKING:
    from calogen.sim.readout import Incidence

NAME = "calibrate-gflash"
HELP = "fit GFLASH parameters to reference showers (e.g. the full simulation) and save them as JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``calogen calibrate-gflash``."""
    parser.add_argument("reference", metavar="REFERENCE.h5", help="CaloChallenge file of reference showers")
    parser.add_argument("--geometry", default="ds2",
                        help="geometry of the reference: built-in name, binning XML or cell-geometry JSON (default: ds2)")
    parser.add_argument("--particle", default="e-", help="particle of the reference showers: e-, e+ or gamma (default: e-)")
    parser.add_argument("-o", "--output", required=True, metavar="PARAMS.json", help="where to write the fitted parameters")
    parser.add_argument("--start", metavar="JSON", help="parameters to start from (medium, settings); default: published values")
    parser.add_argument("--n-model", type=positive_int, default=256, help="GFLASH showers per energy group for the profiles (default: 256)")
    parser.add_argument("--n-hits", type=positive_int, default=200, help="GFLASH showers per energy group for the hit-count fit (default: 200)")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the model showers (default: 0)")


def reference_incidence(path: str | os.PathLike[str]) -> Incidence:
    """The incidence recorded in a shower file by ``calogen simulate`` (normal incidence when absent)."""
    from calogen.io import ShowerFile
    from calogen.sim.readout import Incidence

    with ShowerFile(path) as f:
        attrs = f.attrs
    if "incident_theta" not in attrs:
        return Incidence()
    entry = tuple(float(v) for v in attrs.get("entry_point", (0.0, 0.0)))
    return Incidence(float(attrs["incident_theta"]), float(attrs.get("incident_phi", 0.0)), entry)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    """Fit, save and summarise the parameters; returns 0 on success."""
    from calogen.sim.engines import canonical_particle, configure_numba_cache

    configure_numba_cache()
    from calogen.geometry import resolve_geometry
    from calogen.outputs import check_destination
    from calogen.sim.calibrate import calibrate_gflash
    from calogen.sim.gflash_params import GflashParameters

    check_destination(args.output)
    geometry = resolve_geometry(args.geometry)
    start = None if args.start is None else GflashParameters.load(args.start)
    incidence = reference_incidence(args.reference)
    params = calibrate_gflash(
        args.reference,
        geometry,
        particle=canonical_particle(args.particle),
        incidence=incidence,
        start=start,
        n_model=args.n_model,
        n_hits=args.n_hits,
        seed=args.seed,
    )
    params.save(args.output)
    angle = "" if incidence.theta == 0.0 else f" (incidence theta {math.degrees(incidence.theta):.2f} deg, phi {incidence.phi:.4f} rad)"
    print(f"wrote GFLASH parameters fitted to {args.reference}{angle} to {args.output}")
    return 0
