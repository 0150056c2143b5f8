"""One module per ``calogen`` subcommand, found automatically by :mod:`calogen.cli`.

Each module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; it imports
heavy dependencies inside ``run`` so that ``calogen --help`` stays fast.
"""
