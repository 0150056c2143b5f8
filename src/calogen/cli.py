"""The ``calogen`` command line: a thin dispatcher over one module per subcommand in :mod:`calogen.commands`.

Every subcommand calls a library function. :func:`main` is the one place that turns an exception
raised inside a command into a message: one line on stderr naming the command and the cause, exit
status 2 (130 for Ctrl-C), never a traceback. Errors a user can fix (:class:`~calogen.errors.CalogenError`)
print their message; ``OSError`` prints the reason and the file; anything else (``MemoryError``, a bug)
prints its type and message and a hint that ``-v`` shows the traceback, which ``-v`` then prints.
Usage errors (a missing option, a seed outside ``[0, 2**63)``, a count below 1) are one line too.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from calogen.errors import CalogenError

__all__ = ["describe_error", "main"]


def _command_modules() -> list[str]:
    """Names of the subcommand modules under :mod:`calogen.commands`, alphabetically."""
    import calogen.commands

    return sorted(m.name for m in pkgutil.iter_modules(calogen.commands.__path__) if not m.name.startswith("_"))


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error of the command line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = _Parser(prog="calogen", description="Fast, faithful calorimeter-shower simulation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _command_modules():
        module = importlib.import_module(f"calogen.commands.{name}")
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def describe_error(exc: BaseException) -> str:
    """One line for an exception raised inside a command (see the module docstring)."""
    if isinstance(exc, CalogenError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return f"out of memory{f' ({exc})' if str(exc) else ''}; ask for fewer showers or smaller batches"
    if isinstance(exc, OSError) and exc.strerror:
        names = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
        return f"{exc.strerror}: {' -> '.join(names)}" if names else exc.strerror
    text = " ".join(str(exc).split()) or "(no message)"
    return f"unexpected {type(exc).__name__}: {text} (run with -v for the traceback)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"calogen {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the one place that turns any failure into a one-line message
        if args.verbose:
            traceback.print_exc()
        print(f"calogen {args.command}: error: {describe_error(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
