"""``calogen train``: fit the flow-matching energy + shape model to a CaloChallenge file.

Example:
    calogen train --data ds2_train.h5 --geometry ds2 --preset cpu-small --out runs/ds2-small
    calogen train --data ds2_train.h5 --geometry ds2 --out runs/ds2-small --resume   # after an interruption
    calogen train --data ds2_train.h5 --geometry ds2 --preset student-average-velocity --teacher runs/ds2-small --out runs/ds2-av
    calogen train --data ds2_train.h5 --source ds2_gflash.h5 --geometry ds2 --preset hybrid-small --teacher runs/ds2-small --out runs/hybrid
"""

from __future__ import annotations

import argparse
import os
import sys

from calogen.commands._types import positive_int

NAME = "train"
HELP = "train a generative model (energy + shape, flow matching) on a CaloChallenge HDF5 file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``calogen train``."""
    parser.add_argument("--data", required=True, metavar="TRAIN.h5", help="training showers (CaloChallenge HDF5)")
    parser.add_argument("--geometry", required=True, help="built-in geometry name or CaloChallenge binning XML")
    parser.add_argument(
        "--preset", help="tiny, cpu-small, ds2-base, ds3-base, student-consistency, student-average-velocity, hybrid-small or a YAML/JSON file "
        "(default: cpu-small; with --resume: the run's own)"
    )
    parser.add_argument("--teacher", metavar="MODEL_DIR",
                        help="distil this flow-matching model into a one-step student (needs a student preset; the architecture is the teacher's), "
                        "or, with --source, start a refiner from it")
    parser.add_argument("--source", metavar="FAST.h5",
                        help="a refiner's FastSim showers (same geometry and energies as --data; needs a refiner preset such as hybrid-small; "
                        "with --teacher the refiner keeps that model's energy networks and starts from its shape network)")
    parser.add_argument("--out", required=True, metavar="DIR", help="model directory to create (or continue with --resume)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--max-steps", type=positive_int, metavar="N", help="override the preset's number of optimiser steps")
    parser.add_argument("--shards", type=positive_int, metavar="K",
                        help="split every global batch into K shards with their own noise (default: the number of torchrun processes); "
                        "one process with --shards K reproduces a K-process run")
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar (default: when stderr is a terminal)"
    )


def run(args: argparse.Namespace) -> int:
    """Train and print where the model went (rank 0 only under torchrun); returns 0."""
    from calogen.train.loop import train

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    result = train(args.data, args.geometry, args.preset, args.out, resume=args.resume, max_steps=args.max_steps, progress=progress,
                   teacher=args.teacher, source=args.source, shards=args.shards)  # fmt: skip
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    note = " (stopped early)" if result.stopped_early else ""
    print(f"trained {result.steps} steps{note}, best validation loss {result.best_val:.4f}; model in {result.directory}")
    return 0
