#!/usr/bin/env bash
# The main job: simulate reference showers, generate with the fast models, evaluate, time and report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/.cache/numba}"
exec .venv/bin/calogen demo --out demo-out "$@"
