"""``calogen geometry``: import the HGCal challenge's geometry safely, and describe a geometry.

Example:
    calogen geometry import-hgcal HGCal_geo_2024.pkl -o hgcal-2024.json
    calogen geometry show hgcal-like
"""

from __future__ import annotations

import argparse

NAME = "geometry"
HELP = "import the HGCal challenge's pickled geometry (without running code from it), or describe a geometry"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the subcommands of ``calogen geometry``."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    imp = sub.add_parser("import-hgcal", help="convert a challenge geometry pickle to a calogen cell-geometry JSON")
    imp.add_argument("pickle", metavar="GEO.pkl", help="the challenge's geometry file (HGCalShowers/geoms/*.pkl)")
    imp.add_argument("-o", "--output", required=True, metavar="GEO.json", help="where to write the cell geometry")
    imp.add_argument("--name", help="geometry name (default: the pickle's file stem)")
    imp.add_argument("--layer-depth", type=_positive_float, default=7.8, metavar="MM",
                     help="depth given to each layer, which the pickle does not hold (default: 7.8)")
    show = sub.add_parser("show", help="print a geometry's layers, cells and voxels")
    show.add_argument("geometry", metavar="GEOMETRY", help="built-in name, binning XML or cell-geometry JSON")


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; returns 0."""
    if args.action == "import-hgcal":
        from calogen.hgcal_format import load_hgcal_geometry

        geometry = load_hgcal_geometry(args.pickle, name=args.name, layer_depth=args.layer_depth)
        geometry.to_json(args.output)
        print(f"imported {geometry.name!r}: {geometry.n_layers} layers, {geometry.n_voxels} cells "
              f"(at most {geometry.max_cells} per layer); written to {args.output}")  # fmt: skip
        return 0
    from calogen.geometry import resolve_geometry

    geometry = resolve_geometry(args.geometry)
    cells = [int(n) for n in geometry.layer_offsets[1:] - geometry.layer_offsets[:-1]]
    print(f"{geometry.name}: kind {geometry.kind}, {geometry.n_layers} layers, {geometry.n_voxels} voxels, "
          f"voxels per layer {min(cells)}-{max(cells)}, depth {geometry.layers[0].z_range[0]:g}-{geometry.layers[-1].z_range[1]:g} mm")  # fmt: skip
    return 0
