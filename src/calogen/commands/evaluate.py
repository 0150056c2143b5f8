"""``calogen evaluate REFERENCE GENERATED --geometry G --out DIR``: CaloChallenge metrics and an HTML report.

Any file may be a list of shards of one run: comma-separated (``a.h5,b.h5``) or a quoted glob
(``'ref-*.h5'``); they are checked to form one run and read as one file, in row order.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from calogen.commands._types import positive_int, seed_int

NAME = "evaluate"
HELP = "compare generated showers with reference showers (CaloChallenge metrics, metrics.json, report.html)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options."""
    parser.add_argument("reference", help="reference CaloChallenge HDF5 file, or its shards (quoted glob or comma-separated list)")
    parser.add_argument("generated", nargs="+", help="generated CaloChallenge HDF5 file(s) or shard lists (as the reference); NAME=PATH to label one")
    parser.add_argument("--geometry", default=None,
                        help="built-in geometry (ds1-photons, ds1-pions, ds2, ds3, tiny, hgcal-like, tiny-hex), a binning XML "
                        "or a cell-geometry JSON (default: the geometry the reference file records)")
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
    group = parser.add_argument_group("shards (docs/sharding.md)")
    group.add_argument("--executor", choices=("serial", "pool", "dask"),
                       help="compute the features of shard lists one task per shard on this executor (pool: local processes; "
                       "dask: a LocalCluster, or --scheduler), reduced exactly; default: read the shards as one file")  # fmt: skip
    group.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler to connect to, with --executor dask")
    group.add_argument("--workers", type=positive_int, default=2, help="processes of the pool or local Dask cluster (default: 2)")
    group.add_argument("--retries", type=int, default=2, metavar="K", help="reruns of a failed shard task (default: 2)")


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


def _geometry(args: argparse.Namespace) -> Any:
    """``--geometry``, or the geometry named by the reference file's ``geometry`` attribute."""
    from calogen.errors import CalogenError
    from calogen.geometry import resolve_geometry
    from calogen.io import ShowerFile

    if args.geometry is not None:
        return resolve_geometry(args.geometry)
    from calogen.shards import expand_paths

    with ShowerFile(expand_paths([args.reference])[0]) as f:
        name = f.attrs.get("geometry")
    if not isinstance(name, str):
        raise CalogenError(f"{args.reference} records no geometry; give --geometry")
    return resolve_geometry(name)


def _one_file(item: str, index: int, scratch: Path) -> str:
    """``item`` if it names one file; for a glob or list of shards, a virtual file in ``scratch`` joining them."""
    from calogen.shards import expand_paths, virtual_file

    paths = expand_paths([item])
    return str(paths[0]) if len(paths) == 1 else str(virtual_file(paths, scratch / f"joined-{index}.h5"))


def _shard_features(items: dict[str, str], joined: dict[str, str], args: argparse.Namespace, geometry: Any) -> dict[str, Any]:
    """Features of every shard list among ``items`` (label -> argument), one executor task per shard,
    keyed by the joined file ``joined[label]`` that evaluate reads; empty without ``--executor``."""
    from calogen.executor import make_executor
    from calogen.eval.sharded_features import features_from_shards
    from calogen.shards import expand_paths, in_row_order

    lists = {label: in_row_order(expand_paths([item])) for label, item in items.items()}
    lists = {label: paths for label, paths in lists.items() if len(paths) > 1}
    if args.executor is None or not lists:
        return {}
    if geometry.kind != "cylindrical":
        from calogen.errors import CalogenError

        raise CalogenError("--executor computes features per shard for cylindrical geometries only; drop it for cell geometries")
    with make_executor(args.executor, args.workers if args.executor != "serial" else 1, args.scheduler) as executor:
        return {joined[label]: features_from_shards(paths, geometry, executor=executor, threshold=args.threshold,
                                                    chunk_size=args.chunk_size, retries=args.retries)
                for label, paths in lists.items()}  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the summary table."""
    import shutil
    import tempfile

    from calogen.errors import CalogenError
    from calogen.eval.evaluate import evaluate
    from calogen.eval.settings import DEFAULT_METRICS, EvaluationSettings, parse_metrics
    from calogen.eval.summary import format_table, summary_rows
    from calogen.outputs import check_output_dir

    out = check_output_dir(args.out)
    geometry = _geometry(args)
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
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=out, prefix=".shards-"))
    try:
        reference = _one_file(args.reference, 0, scratch)
        joined = {name: _one_file(path, i + 1, scratch) for i, (name, path) in enumerate(generated.items())}
        features_of = _shard_features({"\0reference": args.reference, **generated}, {"\0reference": reference, **joined}, args, geometry)
        record = evaluate(
            reference, joined, geometry, out, settings=settings, reference_name=args.reference_name,
            progress=not args.quiet, weights=weights, features_of=features_of,
        )
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        if created and out.is_dir() and not any(out.iterdir()):  # bad values found while streaming: leave nothing behind
            out.rmdir()
        raise
    shutil.rmtree(scratch, ignore_errors=True)
    print(format_table(summary_rows(record)))
    print(f"\nwrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'report.html'}")
    return 0
