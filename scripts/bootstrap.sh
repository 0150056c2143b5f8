#!/usr/bin/env bash
# Create .venv (once) and install calogen with its extras; torch is pinned to the local CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.calogen-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -c constraints.txt torch==2.13.0
    .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[all]"
    touch "$stamp"
fi
