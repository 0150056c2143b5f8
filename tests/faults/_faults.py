"""Helpers of the fault-injection tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_isolated(code: str, *, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` in a fresh interpreter (a crash there cannot take the test run down)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def one_error_line(stderr: str, command: str) -> str:
    """The single error line of ``stderr`` (log lines ignored); fails if there is not exactly one, or a traceback."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith(f"calogen {command}: ")]
    assert len(errors) == 1, stderr
    return errors[0]


RUNNER = """
import sys
{prelude}
from calogen.cli import main
for argv in {commands!r}:
    print("@@begin", file=sys.stderr, flush=True)
    status = main(argv)
    print(f"@@status {{status}}", file=sys.stderr, flush=True)
"""


def run_commands(commands: list[list[object]], *, cwd: Path, prelude: str = "") -> list[tuple[int, str]]:
    """Run several ``calogen`` command lines in one fresh interpreter (after ``prelude``, e.g. a fault
    injection); returns each one's exit status and stderr. Fails if the interpreter itself crashed."""
    code = RUNNER.format(prelude=prelude, commands=[[str(a) for a in argv] for argv in commands])
    done = run_isolated(code, cwd=cwd)
    assert done.returncode == 0, f"the interpreter died with status {done.returncode}:\n{done.stderr[-3000:]}"
    results = []
    for part in done.stderr.split("@@begin\n")[1:]:
        body, _, status = part.rpartition("@@status ")
        results.append((int(status.split()[0]), body))
    assert len(results) == len(commands), done.stderr
    return results
