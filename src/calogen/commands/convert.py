"""``calogen convert``: between calogen shower files and the HGCal challenge's layout, for a cell geometry.

Example:
    calogen convert HGCal_showers0.h5 -o showers0.h5 --to calogen --geometry hgcal-2024.json
    calogen convert mc.h5 -o mc_hgcal.h5 --to hgcal --geometry hgcal-like --eta 2.0 --phi 1.5708
"""

from __future__ import annotations

import argparse
import math

from calogen.commands._types import positive_int

NAME = "convert"
HELP = "convert showers between calogen files and the HGCal challenge's (showers (N, L, cells), gen_info) layout"


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``calogen convert``."""
    parser.add_argument("input", metavar="IN.h5", help="the file to convert")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.h5", help="where to write the converted file")
    parser.add_argument("--to", required=True, choices=("calogen", "hgcal"), help="the output's layout")
    parser.add_argument("--geometry", required=True, metavar="GEOMETRY", help="cell geometry: built-in name (hgcal-like, tiny-hex) or JSON")
    parser.add_argument("--eta", type=_finite, help="pseudorapidity of the primaries, for a calogen file without incident_directions")
    parser.add_argument("--phi", type=_finite, help="azimuth (rad) of the primaries, for a calogen file without incident_directions")
    parser.add_argument("--cells-per-layer", type=positive_int, metavar="N",
                        help="--to hgcal: pad each layer to N cells (default: the width recorded at import, else the geometry's largest layer)")


def run(args: argparse.Namespace) -> int:
    """Convert; returns 0."""
    from calogen.cell_geometry import CellGeometry
    from calogen.geometry import GeometryError, resolve_geometry
    from calogen.hgcal_format import calogen_to_hgcal, hgcal_to_calogen

    geometry = resolve_geometry(args.geometry)
    if not isinstance(geometry, CellGeometry):
        raise GeometryError(f"{args.geometry} is a {geometry.kind} geometry; convert needs a cell geometry (e.g. hgcal-like or a JSON)")
    if (args.eta is None) != (args.phi is None):
        raise GeometryError("give --eta and --phi together")
    if args.to == "calogen":
        n = hgcal_to_calogen(args.input, args.output, geometry)
    else:
        direction = None if args.eta is None else (args.eta, args.phi)
        n = calogen_to_hgcal(args.input, args.output, geometry, direction=direction, width=args.cells_per_layer)
    print(f"converted {n} showers ({geometry.name}) to the {args.to} layout: {args.output}")
    return 0
