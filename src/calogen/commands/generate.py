"""``calogen generate``: sample showers from a trained model directory into a CaloChallenge file.

Example:
    calogen generate runs/ds2-small --n 10000 --energy loguniform:1GeV:100GeV --nfe 4 --seed 1 -o gen.h5
    calogen generate runs/ds2-small --energies-from ds2_test.h5 --sampler heun --nfe 8 -o gen.h5
"""

from __future__ import annotations

import argparse
import sys

from calogen.commands._types import positive_int, seed_int

NAME = "generate"
HELP = "generate showers with a trained model into a CaloChallenge HDF5 file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``calogen generate``."""
    parser.add_argument("model", metavar="MODEL_DIR", help="model directory written by calogen train")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--energy", metavar="SPEC", help="incident energies: 10GeV, loguniform:1GeV:100GeV, uniform:A:B, list:A,B")
    source.add_argument("--energies-from", metavar="REF.h5", help="take the incident energies of this shower file")
    parser.add_argument("--n", type=positive_int, help="number of showers (required with --energy; default with --energies-from: all)")
    parser.add_argument("--nfe", type=positive_int, help="network evaluations per model (default: the model's)")
    parser.add_argument("--sampler", help="euler, heun, midpoint, ab2 or (average-velocity models) jump (default: the model's)")
    parser.add_argument("--batch-size", type=positive_int, default=1000, help="showers per sample() call (default: 1000); the output bytes do not depend on it: networks always run on chunks of 256 showers")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of energies and noise (default: 0)")
    parser.add_argument("--weights", choices=("ema", "raw"), default="ema", help="which weights to use (default: ema)")
    parser.add_argument("-o", "--output", required=True, metavar="GEN.h5", help="output file, written when complete")
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar (default: when stderr is a terminal)"
    )


def run(args: argparse.Namespace) -> int:
    """Generate the showers; returns 0."""
    import logging
    import warnings

    import numpy as np

    from calogen.energies import EnergySpec
    from calogen.errors import CalogenError
    from calogen.generator import generate_to_file
    from calogen.io import ShowerFile
    from calogen.models import load
    from calogen.models.samplers import steps_for_nfe
    from calogen.outputs import check_destination

    check_destination(args.output)
    model = load(args.model, weights=args.weights)
    nfe = model.config.nfe if args.nfe is None else args.nfe
    sampler = model.config.sampler if args.sampler is None else args.sampler
    steps_for_nfe(sampler, nfe)
    if args.energy is not None:
        if args.n is None:
            raise CalogenError("--energy needs --n, the number of showers")
        energies = EnergySpec.parse(args.energy).sample(args.n, seed=args.seed)
    else:
        with ShowerFile(args.energies_from) as ref:
            energies = ref.read_energies()[:, 0]
        if energies.size == 0:
            raise CalogenError(f"{args.energies_from} holds no showers; give a file with incident energies or use --energy")
        if args.n is not None:
            if not 1 <= args.n <= energies.size:
                raise CalogenError(f"--n must lie in 1..{energies.size} (showers in {args.energies_from}), got {args.n}")
            energies = energies[: args.n]
    outside = int(model.preprocessor.out_of_range(energies).sum())
    if outside:
        pre = model.preprocessor
        logging.getLogger("calogen.generate").warning(
            "%d of %d energies lie outside the training range [%.4g, %.4g] MeV; flagged in the output attributes",
            outside, energies.size, pre.e_min, pre.e_max,
        )  # fmt: skip
    attrs = {
        "generator": "calogen-hybrid" if hasattr(model, "refiner") else "calogen-flow", "model": str(args.model), "geometry": model.geometry.name, "seed": args.seed,
        "sampler": sampler, "nfe": nfe, "weights": args.weights, "energies_out_of_training_range": outside,
    }  # fmt: skip
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # reported once above and stored in the file
        generate_to_file(model.using(nfe=nfe, sampler=sampler), np.asarray(energies), args.output, seed=args.seed, batch_size=args.batch_size, attrs=attrs, progress=progress)
    print(f"wrote {energies.size} showers ({model.geometry.name}, {sampler} nfe={nfe}) to {args.output}")
    return 0

