"""``calogen reweight``: DCTR classifier weights that make a candidate (fast) sample look like a reference one.

Example:
    calogen reweight --reference full.h5 --candidate gflash.h5 -o gflash_weights.h5
    calogen reweight --reference full.h5 --candidate gflash.h5 --apply-to gflash2.h5 -o gflash2_weights.h5
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from calogen.commands._types import positive_int, seed_int

if TYPE_CHECKING:
    from calogen.geometry import Geometry

NAME = "reweight"
HELP = "fit DCTR classifier weights (reference vs candidate) and write per-shower weights of the candidate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options."""
    parser.add_argument("--reference", required=True, metavar="FULL.h5", help="reference CaloChallenge file (e.g. the full simulation)")
    parser.add_argument("--candidate", required=True, metavar="FAST.h5", help="candidate CaloChallenge file to reweight (e.g. GFLASH)")
    parser.add_argument("-o", "--output", required=True, metavar="WEIGHTS.h5", help="weights file, written when complete")
    parser.add_argument("--apply-to", metavar="FAST2.h5", default=None,
                        help="write the weights of this further candidate file (never seen in fitting) instead of the candidate's")
    parser.add_argument("--geometry", default=None, help="geometry of the files (default: the reference file's 'geometry' attribute)")
    parser.add_argument("--clip", default="ess0.5",
                        help="clip of extreme weights: essF caps them at the largest maximum that keeps ESS >= F N in every "
                        "energy bin (no clip when they already do), a number is a fixed maximum weight (weights have mean 1; "
                        "ESS >= N / max), pQ clips at a percentile such as p99.9, none does not clip (default: ess0.5)")
    parser.add_argument("--folds", type=positive_int, default=5, help="cross-fitting folds, >= 2 (default: 5)")
    parser.add_argument("--calibration-fraction", type=float, default=0.2,
                        help="share of the training folds held out for epoch selection and Platt scaling (default: 0.2)")
    parser.add_argument("--energy-bins", type=positive_int, default=10,
                        help="clip and normalise weights to mean 1 within this many equal-count bins of incident energy, "
                        "so the weighted energy distribution stays the candidate's (1: globally; default: 10)")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the folds and classifiers (default: 0)")
    parser.add_argument("--chunk-size", type=positive_int, default=5_000, help="showers per chunk while streaming")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _geometry(args: argparse.Namespace) -> Geometry:
    """``--geometry``, or the geometry the reference file records."""
    from calogen.errors import CalogenError
    from calogen.geometry import Geometry
    from calogen.io import ShowerFile

    if args.geometry is not None:
        return Geometry.resolve(args.geometry)
    with ShowerFile(args.reference) as f:
        name = f.attrs.get("geometry")
    if not isinstance(name, str):
        raise CalogenError(f"{args.reference} records no geometry; give --geometry")
    return Geometry.resolve(name)


def run(args: argparse.Namespace) -> int:
    """Fit, write the weights file and print AUC, effective sample size and clipped count."""
    from calogen.eval.reweight import ReweightSettings, reweight_files
    from calogen.eval.weight_clipping import ClipRule
    from calogen.outputs import check_destination

    check_destination(args.output)
    ClipRule.parse(args.clip)
    settings = ReweightSettings(
        folds=args.folds, calibration_fraction=args.calibration_fraction, clip=args.clip, seed=args.seed, energy_bins=args.energy_bins
    )
    geometry = _geometry(args)
    out = reweight_files(
        args.reference, args.candidate, args.output, geometry,
        apply_to=args.apply_to, settings=settings, chunk_size=args.chunk_size, progress=not args.quiet,
    )  # fmt: skip
    fit, weights = out["fit"], out["weights"]
    print(f"classifier AUC before calibration (held-out folds): {fit['auc_uncalibrated_mean']:.4f} ± {fit['auc_uncalibrated_std']:.4f}")
    if args.apply_to is not None:
        print(f"cross-fitted weights of {args.candidate}: ESS {fit['ess']:.1f} of {fit['n']}, {fit['n_clipped']} clipped")
    print(f"weights of {out['attrs']['candidate']}: ESS {weights['ess']:.1f} of {weights['n']} ({weights['ess'] / weights['n']:.1%}), "
          f"{weights['n_clipped']} clipped (clip {args.clip}, largest level {weights['clip_value']:.4g}), largest weight {weights['max_weight']:.4g}")
    print(f"wrote {args.output}")
    return 0
