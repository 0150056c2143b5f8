"""``calogen refine``: carry the showers of a FastSim file toward the full simulation with a trained refiner.

Example:
    calogen refine runs/hybrid --fastsim ds2_gflash.h5 -o refined.h5 --nfe 2 --seed 1
"""

from __future__ import annotations

import argparse
import sys

from calogen.commands._types import positive_int, seed_int

NAME = "refine"
HELP = "refine FastSim showers (e.g. GFLASH) with a hybrid refiner into a CaloChallenge HDF5 file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``calogen refine``."""
    parser.add_argument("model", metavar="MODEL_DIR", help="refiner directory written by calogen train --preset hybrid-... --source")
    parser.add_argument("--fastsim", required=True, metavar="FAST.h5", help="FastSim showers of the refiner's geometry and energy range")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.h5", help="output file, written when complete")
    parser.add_argument("--nfe", type=positive_int, help="shape-flow evaluations (default: the model's)")
    parser.add_argument("--sampler", help="euler, heun, midpoint or ab2 (default: the model's)")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the start noise and the energy networks (default: 0)")
    parser.add_argument("--chunk-size", type=positive_int, default=10_000, help="showers read and written at once (default: 10000)")
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar (default: when stderr is a terminal)"
    )


def run(args: argparse.Namespace) -> int:
    """Refine the file; returns 0."""
    from calogen.hybrid import refine_file

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    n = refine_file(args.model, args.fastsim, args.output, seed=args.seed, nfe=args.nfe, sampler=args.sampler,
                    chunk_size=args.chunk_size, progress=progress)  # fmt: skip
    print(f"refined {n} showers from {args.fastsim} into {args.output}")
    return 0
