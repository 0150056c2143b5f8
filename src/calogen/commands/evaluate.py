"""``calogen evaluate REFERENCE GENERATED --geometry G --out DIR``: CaloChallenge metrics and an HTML report."""

from __future__ import annotations

import argparse

from calogen.commands._types import positive_int, seed_int

NAME = "evaluate"
HELP = "compare generated showers with reference showers (CaloChallenge metrics, metrics.json, report.html)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options."""
    parser.add_argument("reference", help="reference CaloChallenge HDF5 file")
    parser.add_argument("generated", nargs="+", help="generated CaloChallenge HDF5 file(s); NAME=PATH to label one")
    parser.add_argument("--geometry", required=True, help="built-in geometry (ds1-photons, ds1-pions, ds2, ds3, tiny) or a binning XML")
    parser.add_argument("--out", required=True, help="output directory for metrics.json and report.html")
    parser.add_argument("--metrics", default=None, help="comma-separated subset of hist,cls-low,cls-high,cnn,fpd,kpd,prdc,families, or 'all' (default: all)")
    parser.add_argument("--threshold", type=float, default=None, help="per-voxel threshold in MeV (default: the geometry's)")
    parser.add_argument("--seed", type=seed_int, default=42, help="seed of classifier splits and FPD/KPD resampling (default: 42, as the official code)")
    parser.add_argument("--fast-classifier", action="store_true",
                        help="not official: calogen's fast standardised classifier (10 epochs, early stopping, 3 runs) "
                        "instead of the CaloChallenge settings; a stronger judge at small N, recorded in metrics.json")
    parser.add_argument("--max-showers", type=positive_int, default=10_000, help="showers per file used by the classifiers (default: 10000)")
    parser.add_argument("--chunk-size", type=positive_int, default=5_000, help="showers per chunk while streaming")
    parser.add_argument("--reference-name", default="reference", help="label of the reference in the report")
    parser.add_argument("--weights", action="append", default=[], metavar="NAME=WEIGHTS.h5",
                        help="per-shower weights of sample NAME (from calogen reweight): weighted histograms, separation "
                        "powers and classifier AUCs, and the effective sample size; WEIGHTS.h5 alone with one sample; repeatable")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _weights(items: list[str], generated: dict[str, str]) -> dict[str, str]:
    """``--weights`` values as sample name -> weights file."""
    from calogen.errors import CalogenError

    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            if len(generated) != 1:
                raise CalogenError(f"--weights {item}: name the sample, NAME=WEIGHTS.h5, one of {sorted(generated)}")
            name, path = next(iter(generated)), item
        if name in out:
            raise CalogenError(f"two --weights for sample {name!r}; give one weights file per sample")
        out[name] = path
    return out


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the summary table."""
    from pathlib import Path

    from calogen.errors import CalogenError
    from calogen.eval.evaluate import DEFAULT_METRICS, EvaluationSettings, evaluate, format_table, parse_metrics, summary_rows
    from calogen.geometry import Geometry
    from calogen.outputs import check_output_dir

    out = check_output_dir(args.out)
    geometry = Geometry.resolve(args.geometry)
    generated: dict[str, str] = {}
    for item in args.generated:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).stem, item
        if name in generated:
            raise CalogenError(f"two generated samples are called {name!r}; label them NAME=PATH")
        generated[name] = path
    weights = _weights(args.weights, generated)
    if args.max_showers < 10:
        raise CalogenError(f"--max-showers must be >= 10, got {args.max_showers}")
    settings = EvaluationSettings(
        metrics=parse_metrics(args.metrics) if args.metrics else DEFAULT_METRICS,
        threshold=args.threshold,
        chunk_size=args.chunk_size,
        seed=args.seed,
        official_classifier=not args.fast_classifier,
        max_showers_per_side=args.max_showers,
    )
    created = not out.exists()
    try:
        record = evaluate(
            args.reference, generated, geometry, out, settings=settings, reference_name=args.reference_name,
            progress=not args.quiet, weights=weights,
        )
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):  # bad values found while streaming: leave nothing behind
            out.rmdir()
        raise
    print(format_table(summary_rows(record)))
    print(f"\nwrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'report.html'}")
    return 0
