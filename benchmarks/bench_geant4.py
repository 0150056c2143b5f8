"""Time per event of the Geant4 example: transport, inference and placement; local vs server, batched vs per particle.

Runs ``examples/geant4/run.py`` for every combination of particles per event (``--particles``, default
1 and 10 electrons of ``--energy``, default log-uniform 10-100 GeV), backend (calogen in the process,
or ``calogen serve`` of the same model over gRPC on loopback, started here) and inference mode (one
call per event, or one call per particle), each with the same seed so the same particles enter the
calorimeter. Prints a Markdown table of the mean time per event of each part (the first event of a
run, which pays one-time costs, is left out) and writes every run's numbers to ``--json``.

Usage:
    flock /tmp/calogen-heavy.lock python benchmarks/bench_geant4.py --events 21
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "examples" / "geant4" / "run.py"
SHIPPED = ROOT / "src" / "calogen" / "data" / "pretrained" / "cpu-small-ds2"
PARTS = ("transport", "inference", "placement")


@contextmanager
def served(model: Path, env: dict[str, str]) -> Iterator[int]:
    """``calogen serve MODEL`` on a free gRPC port (yields the port); stopped with SIGTERM."""
    cmd = [sys.executable, "-m", "calogen.cli", "serve", str(model), "--http-port", "0", "--grpc-port", "0"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        port = None
        while port is None:
            line = proc.stdout.readline()
            if not line:
                raise SystemExit("calogen serve exited before it was ready")
            found = re.search(r"grpc 127\.0\.0\.1:(\d+)", line)
            port = int(found[1]) if found else None
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        proc.stdout.close()


def run(args: argparse.Namespace, env: dict[str, str], particles: int, extra: list[str], folder: Path) -> dict[str, float]:
    """One run of the example; mean milliseconds per event of each part, first event left out."""
    summary = folder / "summary.json"
    cmd = [
        sys.executable, str(RUN), "--quiet", "--events", str(args.events), "--particles", str(particles), "--energy", args.energy,
        "--spread-deg", str(args.spread_deg), "--seed", str(args.seed), "--model", *extra, "-o", str(folder / "events.h5"), "--summary", str(summary),
    ]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    events = json.loads(summary.read_text())["events"][1:]
    out = {part: 1e3 * float(np.mean([e["seconds"][part] for e in events])) for part in PARTS}
    out["showers"] = float(np.mean([len(e["energies"]) for e in events]))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=SHIPPED, help="model directory (default: the shipped cpu-small-ds2)")
    p.add_argument("--events", type=int, default=21, help="events per run, the first left out (default: 21)")
    p.add_argument("--particles", type=int, nargs="+", default=[1, 10], help="particles per event (default: 1 10)")
    p.add_argument("--energy", default="loguniform:10GeV:100GeV", help="gun energies (default: loguniform:10GeV:100GeV)")
    p.add_argument("--spread-deg", type=float, default=10.0, help="cone of directions (default: 10 degrees)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="write every run's numbers here")
    args = p.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp, served(args.model, env) as port:
        for particles in args.particles:
            for backend, extra in (("local", [str(args.model)]), ("server (gRPC)", [args.model.name, "--backend", "triton", "--url", f"grpc://127.0.0.1:{port}"])):
                for mode, flag in (("batched", []), ("per particle", ["--per-particle"])):
                    start = time.perf_counter()
                    times = run(args, env, particles, extra + flag, Path(tmp))
                    rows.append({"particles": particles, "backend": backend, "mode": mode, **times, "wall_s": time.perf_counter() - start})
                    print(f"done: {particles} particles, {backend}, {mode}", file=sys.stderr, flush=True)
    print("| particles/event | backend | inference calls | transport ms | inference ms | placement ms | total ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        total = sum(r[part] for part in PARTS)
        print(f"| {r['particles']} | {r['backend']} | {r['mode']} | {r['transport']:.2f} | {r['inference']:.1f} | {r['placement']:.1f} | {total:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
