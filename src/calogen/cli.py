"""The ``calogen`` command line: a thin dispatcher over one module per subcommand in :mod:`calogen.commands`.

Every subcommand calls a library function; errors a user can fix (:class:`~calogen.errors.CalogenError`,
missing or unwritable files) are printed as one line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from calogen.errors import CalogenError

__all__ = ["main"]



def _command_modules() -> list[str]:
    """Names of the subcommand modules under :mod:`calogen.commands`, alphabetically."""
    import calogen.commands

    return sorted(m.name for m in pkgutil.iter_modules(calogen.commands.__path__) if not m.name.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(prog="calogen", description="Fast, faithful calorimeter-shower simulation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _command_modules():
        module = importlib.import_module(f"calogen.commands.{name}")
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except CalogenError as exc:
        print(f"calogen {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"calogen {args.command}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"calogen {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
