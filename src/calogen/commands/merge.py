"""``calogen merge -o OUT.h5 SHARD.h5...``: concatenate the shards of one run into one CaloChallenge file.

Example:
    calogen merge -o ds2.h5 'parts/ds2-*.h5'
"""

from __future__ import annotations

import argparse

NAME = "merge"
HELP = "merge the shards of one run (--shard-index/--num-shards) into one CaloChallenge HDF5 file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``calogen merge``."""
    parser.add_argument("shards", nargs="+", metavar="SHARD.h5", help="shard files, comma-separated lists or quoted glob patterns, in any order")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.h5", help="merged file, written when complete")


def run(args: argparse.Namespace) -> int:
    """Check the shards form one run without gaps or overlaps, then merge them in row order; returns 0."""
    from calogen.shards import expand_paths, merge_shards

    paths = expand_paths(args.shards)
    merge_shards(paths, args.output)
    print(f"merged {len(paths)} shard(s) into {args.output}")
    return 0
