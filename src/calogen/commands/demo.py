"""``calogen demo --out DIR``: simulate, generate, reweight, refine, evaluate, time and report in one go."""

from __future__ import annotations

import argparse

from calogen.commands._types import positive_int, seed_int

NAME = "demo"
HELP = "the main job: detailed MC vs GFLASH, GFLASH + DCTR weights, the shipped model and hybrid, evaluated and timed, one report.html"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options."""
    parser.add_argument("--out", default="demo-out", help="output directory (default: demo-out)")
    parser.add_argument("--n", type=positive_int, default=2000, help="held-out detailed-MC showers (default: 2000)")
    parser.add_argument("--energy", default="loguniform:1GeV:100GeV", help="incident energies (default: loguniform:1GeV:100GeV)")
    parser.add_argument("--seed", type=seed_int, default=2026, help="run seed")
    parser.add_argument("--nfe", type=positive_int, default=None, help="network evaluations of the model's and the hybrid's shape sampler")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Run the demo and print the summary table."""
    from pathlib import Path

    from calogen.demo import DemoSettings, run_demo
    from calogen.energies import EnergySpec
    from calogen.eval.summary import format_table, summary_rows
    from calogen.outputs import check_output_dir

    check_output_dir(args.out)
    EnergySpec.parse(args.energy)
    settings = DemoSettings(n=args.n, energies=args.energy, seed=args.seed, nfe=args.nfe)
    record = run_demo(args.out, settings, progress=not args.quiet)
    print(format_table(summary_rows(record)))
    print(f"\ndetailed MC: {record['demo']['detailed_mc_ms_per_shower']:.1f} ms/shower (wall time of the reference run)")
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0
