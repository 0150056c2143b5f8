"""``calogen fit-occupancy``: add the occupancy stage (hits per ring, voxel spectrum) to a trained model.

Example:
    calogen fit-occupancy runs/cpu-small --data ds2_train.h5 --out runs/cpu-small-occ
    calogen fit-occupancy runs/student --data ds2_train.h5 --counts-from runs/cpu-small-occ --nfe 1 2
    calogen fit-occupancy runs/hgcal --data hgcal_train.h5 --out runs/hgcal-occ --floors 0 1 2 4 8 16 --placement sampled
"""

from __future__ import annotations

import argparse
import sys

from calogen.commands._types import nonnegative, positive_int, seed_int

NAME = "fit-occupancy"
HELP = "fit the occupancy stage (hits per ring and their energies) of a trained model to its training showers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``calogen fit-occupancy``."""
    parser.add_argument("model", metavar="MODEL_DIR", help="trained model directory")
    parser.add_argument("--data", required=True, metavar="TRAIN.h5", help="the model's training showers (never the evaluation reference)")
    parser.add_argument("--out", metavar="DIR", help="write a copy of the model (without its training checkpoints) with the stage here (default: add it to MODEL_DIR)")
    parser.add_argument("--n-showers", type=positive_int, metavar="N", help="use the first N showers (default: all)")
    parser.add_argument("--steps", type=positive_int, default=1500, help="optimiser steps of the count network (default: 1500)")
    parser.add_argument("--spectrum-showers", type=positive_int, default=2000, help="showers generated to fit floor and gamma (default: 2000)")
    parser.add_argument("--nfe", type=positive_int, nargs="+", default=[1, 2, 4, 8], metavar="N",
                        help="NFEs of the model's sampler that get their own spectrum fit, besides its default (default: 1 2 4 8)")
    parser.add_argument("--floors", type=nonnegative("energy", " MeV"), nargs="+", metavar="MEV",
                        help="grid of least hit energies (MeV) of the spectrum fit (default: 0 0.3 0.6 1 1.5 2 3; cell geometries "
                             "with hits of tens of MeV need larger ones)")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the fit (default: 0)")
    centre = parser.add_mutually_exclusive_group()
    centre.add_argument("--centre", dest="centre", action="store_const", const=True,
                        help="restore each ring's centre of energy to the shape network's after the gamma flattening "
                             "(default for cylindrical geometries)")
    centre.add_argument("--no-centre", dest="centre", action="store_const", const=False,
                        help="leave it where the flattening puts it (the stage before 2026-12-06; default for cell geometries)")
    parser.add_argument("--placement", choices=("largest", "sampled"), default="largest",  # occupancy.PLACEMENTS (torch loads lazily)
                        help="which voxels of a ring hold its hits: the largest logits, or drawn weighted by exp(logit) "
                             "(hits move from shower to shower; one more noise value per voxel) (default: largest)")
    parser.add_argument("--counts-from", metavar="MODEL_DIR",
                        help="reuse the count network of this model's occupancy stage (a student's teacher) and fit only the spectra")


def run(args: argparse.Namespace) -> int:
    """Fit, write the two files, print where; returns 0."""
    from calogen.models.occupancy import OccupancyConfig
    from calogen.train.occupancy import FitSettings, fit_occupancy

    settings = FitSettings(steps=args.steps, n_spectrum=args.spectrum_showers, seed=args.seed, nfes=tuple(args.nfe),
                           **({"floors": tuple(args.floors)} if args.floors else {}))  # fmt: skip
    record = fit_occupancy(args.model, args.data, out=args.out, n_showers=args.n_showers, settings=settings,
                           config=OccupancyConfig(placement=args.placement), log=lambda line: print(line, file=sys.stderr),
                           counts_from=args.counts_from, centre=args.centre)  # fmt: skip
    spectrum = record["spectrum"]
    print(
        f"occupancy stage fitted on {record['n_showers']} showers: count NLL {record['counts'].get('best_val_nll_per_shower', float('nan')):.2f}/shower, "
        f"hit threshold {record['threshold']:.3g} MeV, gamma {spectrum['gamma']}, floor {', '.join(f'{v:.3g}' for v in spectrum['floor'])} MeV, spectrum separation {spectrum['separation']:.4f}; "
        f"written to {args.out or args.model}"
    )
    return 0
