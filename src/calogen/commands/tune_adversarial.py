"""``calogen tune-adversarial``: tune a trained model against a critic on the official high-level vector.

Example:
    calogen tune-adversarial runs/student --data ds2_train.h5 --out runs/student-adv
    calogen tune-adversarial runs/student --data ds2_train.h5 --out runs/student-adv --resume
    calogen tune-adversarial runs/directed --data train.h5 --out runs/directed-fm --feature-matching 1
"""

from __future__ import annotations

import argparse
import sys

from calogen.commands._types import nonnegative, positive_int, seed_int

NAME = "tune-adversarial"
HELP = "tune a trained model against a critic of its high-level features (training showers only); writes a new model directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``calogen tune-adversarial``."""
    from calogen.train.adversarial import NETWORKS, TuneSettings

    default = TuneSettings()
    parser.add_argument("model", metavar="MODEL_DIR", help="trained model directory (a cylindrical-readout flow model or student)")
    parser.add_argument("--data", required=True, metavar="TRAIN.h5", help="the model's training showers (never the evaluation reference)")
    parser.add_argument("--out", required=True, metavar="DIR", help="new model directory (must not exist; work goes to DIR.partial)")
    parser.add_argument("--n-showers", type=positive_int, metavar="N", help="use the first N training showers (default: all)")
    parser.add_argument("--steps", type=positive_int, default=default.steps, help=f"generator steps (default: {default.steps})")
    parser.add_argument("--batch-size", type=positive_int, default=default.batch_size, help=f"showers per step (default: {default.batch_size})")
    parser.add_argument("--lr", type=nonnegative(), default=default.lr, help=f"generator learning rate (default: {default.lr})")
    parser.add_argument("--anchor", type=nonnegative(), default=default.anchor,
                        help=f"weight of the distance to the starting model's outputs (default: {default.anchor})")
    parser.add_argument("--feature-matching", type=nonnegative(), default=default.feature_matching, metavar="W",
                        help="weight of the conditional feature-matching term: batch means of generated minus training vectors, "
                             f"times 1, log E and the direction, pulled to zero (default: {default.feature_matching}, none)")
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(default.networks),
                        help=f"networks to tune (default: {' '.join(default.networks)})")
    parser.add_argument("--seed", type=seed_int, default=default.seed, help=f"seed of the critic and of every step's draws (default: {default.seed})")
    parser.add_argument("--resume", action="store_true", help="continue the unfinished tune in DIR.partial")


def run(args: argparse.Namespace) -> int:
    """Tune, write the model, print where; returns 0."""
    from calogen.train.adversarial import TuneSettings, tune_adversarial

    settings = TuneSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr, anchor=args.anchor,
                            feature_matching=args.feature_matching, networks=tuple(args.networks), seed=args.seed)  # fmt: skip
    record = tune_adversarial(args.model, args.data, args.out, settings=settings, n_showers=args.n_showers, resume=args.resume,
                              log=lambda line: print(line, file=sys.stderr))  # fmt: skip
    last = record["history"][-1] if record["history"] else {}
    print(f"tuned {', '.join(settings.networks)} for {settings.steps} steps on {record['data']['n_showers']} training showers "
          f"(last critic loss {last.get('critic_loss', float('nan')):.4f}); written to {args.out}")  # fmt: skip
    return 0
