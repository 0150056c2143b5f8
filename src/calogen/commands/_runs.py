"""Options shared by ``calogen simulate`` and ``calogen generate``: shards of a run and the executor.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_run_arguments(parser)
    >>> shard_of(parser.parse_args(["--shard-index", "2", "--num-shards", "3"]))
    (2, 3)
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from calogen.commands._types import positive_int
from calogen.errors import CalogenError

if TYPE_CHECKING:
    from calogen.executor import Executor

__all__ = ["add_run_arguments", "executor_of", "shard_of"]


def _index(text: str) -> int:
    """An integer >= 0."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_run_arguments(parser: argparse.ArgumentParser, *, default_workers: int = 1) -> None:
    """Add ``--shard-index``, ``--num-shards``, ``--executor``, ``--scheduler``, ``--workers`` and ``--retries``."""
    group = parser.add_argument_group("shards and executors (docs/sharding.md)")
    group.add_argument("--shard-index", type=_index, metavar="I", help="write only shard I (0-based) of the run, with its manifest, for calogen merge")
    group.add_argument("--num-shards", type=positive_int, metavar="N", help="number of shards the run is cut into (with --shard-index)")
    group.add_argument("--executor", choices=("serial", "pool", "dask"),
                       help="serial, pool (local processes) or dask (a LocalCluster, or --scheduler); "
                       "default: pool when --workers > 1, else serial; the output does not depend on it")  # fmt: skip
    group.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler to connect to (tcp://host:8786), with --executor dask")
    group.add_argument("--workers", type=positive_int, default=default_workers,
                       help=f"processes of the pool or the local Dask cluster (default: {default_workers})")  # fmt: skip
    group.add_argument("--retries", type=int, default=2, metavar="K", help="reruns of a failed Dask task (default: 2)")


def shard_of(args: argparse.Namespace) -> tuple[int, int] | None:
    """``(index, count)`` from ``--shard-index`` / ``--num-shards``, or None when both are absent."""
    if (args.shard_index is None) != (args.num_shards is None):
        raise CalogenError("--shard-index and --num-shards go together; give both or neither")
    if args.shard_index is None:
        return None
    if args.shard_index >= args.num_shards:
        raise CalogenError(f"--shard-index must lie in 0..{args.num_shards - 1} for --num-shards {args.num_shards}, got {args.shard_index}")
    return args.shard_index, args.num_shards


def executor_of(args: argparse.Namespace) -> Executor:
    """The executor the options ask for (:func:`calogen.executor.make_executor`); close it after use."""
    from calogen.executor import make_executor

    if args.retries < 0:
        raise CalogenError(f"--retries must be >= 0, got {args.retries}")
    kind = args.executor
    if kind == "serial" and args.workers != 1:
        raise CalogenError(f"--executor serial runs one process; drop --workers {args.workers} or use --executor pool")
    return make_executor(kind, args.workers, args.scheduler)
