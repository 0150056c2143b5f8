"""``calogen bench``: time generators at several batch sizes and draw them on the CaloChallenge quality-vs-time plane.

Example:
    calogen bench --geometry ds2 --generator nfe2=model:runs/cpu-small@nfe=2 --generator gflash --generator mc \\
        --generator 'mine=cmd:python gen.py --energies {energies} -o {out}' --metrics eval-out/metrics.json --out bench-out
"""

from __future__ import annotations

import argparse
from typing import Any

from calogen.commands._types import positive_int, seed_int

NAME = "bench"
HELP = "time generators (CPU, and GPU when present) and draw quality vs time next to the published CaloChallenge results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options."""
    parser.add_argument(
        "--generator", "-g", action="append", default=[], metavar="[NAME=]SPEC",
        help="model:DIR[@nfe=N,sampler=S,weights=ema|raw], gflash, mc, or NAME=cmd:COMMAND with {energies} "
        "{energies_txt} {n} {seed} {out} (the program writes a CaloChallenge file to {out}); repeat for several",
    )  # fmt: skip
    parser.add_argument(
        "--metrics", action="append", default=[], metavar="[GEN=]METRICS.json[#SAMPLE]",
        help="calogen evaluate output giving the quality of generators of the same name (or of GEN, from SAMPLE)",
    )  # fmt: skip
    parser.add_argument("--geometry", required=True, help="built-in geometry (ds1-photons, ds1-pions, ds2, ds3, tiny) or a binning XML")
    parser.add_argument("--particle", default=None, help="particle for gflash / mc (default: e-, or gamma for ds1-photons)")
    parser.add_argument("--out", required=True, help="output directory: bench.json, bench.html, bench-plane.svg/.png")
    parser.add_argument("--energy", default="loguniform:1GeV:100GeV", metavar="SPEC", help="incident energies of the timed calls (default: loguniform:1GeV:100GeV)")
    parser.add_argument("--batch-sizes", default="1,100,10000", help="comma-separated batch sizes (default: 1,100,10000)")
    parser.add_argument("--budget", type=float, default=60.0, metavar="S", help="seconds per generator and batch size, warm-up included (default: 60)")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="timed seconds wanted per batch size (default: 1)")
    parser.add_argument("--min-showers", type=positive_int, default=1000, help="timed showers wanted per batch size (default: 1000)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch and numba CPU threads (default: leave as set)")
    parser.add_argument("--no-gpu", action="store_true", help="do not time on the GPU even when one is present")
    parser.add_argument("--plane", default="cpu:100", metavar="DEVICE:BATCH", help="timing drawn on the plane (default: cpu:100)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="time drawn on the plane: wall (default) or process CPU time")
    parser.add_argument("--published", default="auto", help="published results to overlay: auto (the geometry's dataset), none, or a dataset name")
    parser.add_argument("--seed", type=seed_int, default=0, help="timing seed (default: 0)")
    parser.add_argument("--timings-from", metavar="BENCH.json", help="reuse the timings of an earlier run instead of timing (no --generator)")


def _plane(text: str, gpu: bool) -> tuple[str, int]:
    from calogen.eval.bench.generators import BenchError

    device, _, batch = text.partition(":")
    if device not in ("cpu", "gpu") or not batch.isdigit():
        raise BenchError(f"--plane {text!r} must read cpu:BATCH or gpu:BATCH, e.g. cpu:100")
    if device == "gpu" and not gpu:
        raise BenchError("--plane gpu:... needs GPU timings; there is no GPU here (or --no-gpu was given, or the reused run had none)")
    return device, int(batch)


def run(args: argparse.Namespace) -> int:
    """Time, read the metrics, draw and write; prints the timing table."""
    from calogen.energies import EnergySpec
    from calogen.eval.bench.generators import BenchError, parse_generator
    from calogen.eval.bench.run import BenchSettings, gpu_name, load_timings, time_all
    from calogen.geometry import Geometry
    from calogen.sim.engines import canonical_particle

    geometry = Geometry.resolve(args.geometry)
    if bool(args.generator) == bool(args.timings_from):
        raise BenchError("give the generators to time (--generator) or an earlier bench.json (--timings-from), not both")
    specs = [parse_generator(text) for text in args.generator]
    if args.timings_from:
        rows, settings, machine = load_timings(args.timings_from, geometry=geometry.name)
        return _finish(args, geometry, rows, settings, machine)
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BenchError(f"generator names {duplicates} are used twice; name them NAME=SPEC")
    try:
        sizes = tuple(int(s) for s in args.batch_sizes.split(","))
    except ValueError:
        raise BenchError(f"--batch-sizes {args.batch_sizes!r} must be comma-separated integers, e.g. 1,100,10000") from None
    EnergySpec.parse(args.energy)
    settings = BenchSettings(
        batch_sizes=sizes, energies=args.energy, budget_s=args.budget, min_seconds=args.min_seconds,
        min_showers=args.min_showers, seed=args.seed, threads=args.threads, gpu=not args.no_gpu,
    )  # fmt: skip
    particle = canonical_particle(args.particle or ("gamma" if geometry.name == "ds1-photons" else "e-"))
    _check(args, geometry, names, settings, settings.gpu and gpu_name() is not None and any(s.kind == "model" for s in specs))
    rows = time_all(specs, geometry, settings, particle=particle)
    return _finish(args, geometry, rows, settings, None)


def _check(args: argparse.Namespace, geometry: Any, names: list[str], settings: Any, gpu: bool) -> tuple[Any, Any, Any]:
    """Output directory, plane, published results and quality: everything that can fail, checked before timing starts."""
    from calogen.eval.bench.generators import BenchError
    from calogen.eval.bench.published import DATASETS, published_results
    from calogen.eval.bench.quality import load_quality
    from calogen.outputs import check_output_dir

    check_output_dir(args.out)
    plane = _plane(args.plane, gpu)
    if plane[1] not in settings.batch_sizes:
        raise BenchError(f"--plane {args.plane}: batch {plane[1]} is not among the timed batch sizes {tuple(settings.batch_sizes)}")
    dataset = geometry.name if args.published == "auto" else None if args.published == "none" else args.published
    published = published_results(dataset) if dataset in DATASETS or args.published not in ("auto", "none") else None
    return plane, published, load_quality(args.metrics, names, geometry=geometry.name)


def _finish(args: argparse.Namespace, geometry: Any, rows: list[dict[str, Any]], settings: Any, machine: dict[str, Any] | None) -> int:
    """Assemble the record, write the outputs and print the timing table."""
    from calogen.eval.bench.page import write_outputs
    from calogen.eval.bench.run import make_record

    gpu = any(r["timing"].get("gpu") for r in rows)
    plane, published, quality = _check(args, geometry, [r["name"] for r in rows], settings, gpu)
    record = make_record(rows, quality, geometry, settings, plane=plane, published=published, machine=machine, clock=args.clock)
    paths = write_outputs(record, args.out)
    for row in rows:
        for device, result in row["timing"].items():
            if result:
                cells = ", ".join(f"b{b['batch_size']} {b['ms_per_shower_median']:.4g}" + ("*" if b["capped"] else "") for b in result["batches"])
                print(f"{row['name']:>24} {device}: {cells} ms/shower; {row['n_parameters']:,} parameters")
    print("(* capped by the time budget)" if any(b["capped"] for r in rows for t in r["timing"].values() if t for b in t["batches"]) else "", end="")
    print(f"\nwrote {', '.join(str(p) for p in paths)}")
    return 0
