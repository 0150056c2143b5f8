"""Peak memory and time of the classifier tests at scale (e.g. 100k vs 100k DS2 showers, official settings).

A shower file is streamed ``--replicas`` times in chunks, standing in for a file that many times larger
(10k DS2 showers x 10 = 100k), for both the reference and the generated side. Each phase runs in its
own process, so its peak resident memory (``ru_maxrss``) is its own:

* ``prep-low``: the low-level inputs of both sides stacked as evaluate does (``stack_low_level``:
  ``(N, 1 + voxels)`` float32 each, filled chunk by chunk);
* ``prep-high``: high-level features streamed and the official 362-column vector of both sides;
* ``train-low`` / ``train-high``: the preparation, then ``--steps`` Adam steps of the official network
  (3 x 2048, batch 1000, float32) on the training split; the seconds per step give the time of the
  official 50 epochs by extrapolation (printed as such), and the peak memory is that of training;
* ``fit-high``: the whole official cls-high run (``ClassifierSettings.official()``, all epochs).

Usage:
    NUMBA_CACHE_DIR=.cache/numba .venv/bin/python benchmarks/bench_classifier_memory.py \\
        --reference ref_10k.h5 --generated gen_10k.h5 --replicas 10 [--phases prep-low,prep-high] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from calogen.eval.classifier import run_classifier
from calogen.eval.classifier_inputs import stack_low_level
from calogen.eval.classifier_settings import ClassifierSettings
from calogen.features import FeatureAccumulator, high_level_vector
from calogen.geometry import Geometry
from calogen.io import ShowerFile

CHUNK = 1000


def replicated_chunks(path: Path, geometry: Geometry, replicas: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(energies, showers)`` chunks of ``path``, the whole file ``replicas`` times over."""
    for _ in range(replicas):
        with ShowerFile(path, geometry) as f:
            for chunk in f.iter_chunks(CHUNK):
                yield chunk.energies, chunk.showers


def rows(path: Path, geometry: Geometry, replicas: int) -> int:
    with ShowerFile(path, geometry) as f:
        return f.n_showers * replicas


def prepare(kind: str, args: argparse.Namespace, geometry: Geometry) -> list[np.ndarray]:
    """Classifier inputs of both sides, ``kind`` "low" or "high"."""
    out = []
    for path in (args.reference, args.generated):
        chunks = replicated_chunks(path, geometry, args.replicas)
        if kind == "low":
            out.append(stack_low_level(chunks, rows(path, geometry, args.replicas), geometry.n_voxels, threshold=geometry.threshold))
        else:
            acc = FeatureAccumulator(geometry)
            for energies, showers in chunks:
                acc.update(energies, showers)
            out.append(high_level_vector(acc.result()))
    return out


def train_steps(inputs: list[np.ndarray], steps: int) -> float:
    """Seconds per Adam step of the official network on batches of 1000 from both sides (float32)."""
    settings = ClassifierSettings.official()
    layers: list[torch.nn.Module] = []
    width = inputs[0].shape[1]
    for hidden in settings.hidden:
        layers += [torch.nn.Linear(width, hidden), torch.nn.LeakyReLU()]
        width = hidden
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    rng = np.random.default_rng(0)
    start = None
    for step in range(steps + 1):  # the first step (allocations) is not timed
        if step == 1:
            start = time.perf_counter()
        rows = [rng.integers(0, len(x), settings.batch_size // 2) for x in inputs]
        x = torch.from_numpy(np.concatenate([inputs[0][rows[0]], inputs[1][rows[1]]]).astype(np.float32))
        y = torch.cat([torch.zeros(len(rows[0])), torch.ones(len(rows[1]))])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert start is not None
    return (time.perf_counter() - start) / steps


def run_phase(phase: str, args: argparse.Namespace) -> dict:
    geometry = Geometry.builtin(args.geometry)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    kind = "low" if phase.endswith("low") else "high"
    inputs = prepare(kind, args, geometry)
    result: dict = {"phase": phase, "rows_per_side": len(inputs[0]), "columns": inputs[0].shape[1],
                    "input_gib": sum(x.nbytes for x in inputs) / 2**30, "prep_s": time.perf_counter() - start}  # fmt: skip
    if phase.startswith("train"):
        per_step = train_steps(inputs, args.steps)
        n_train = int(0.6 * len(inputs[0])) * 2
        epoch_steps = -(-n_train // 1000)
        result |= {"s_per_step": per_step, "steps_per_epoch": epoch_steps,
                   "extrapolated_50_epochs_h": per_step * epoch_steps * 50 / 3600}  # fmt: skip
    if phase == "fit-high":
        fit = run_classifier("cls-high", inputs[0], inputs[1], ClassifierSettings.official(num_threads=args.threads))
        result |= {"auc": fit.auc_mean, "best_epoch": fit.best_epochs[0], "fit_s": time.perf_counter() - start - result["prep_s"]}
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--generated", type=Path, required=True)
    parser.add_argument("--geometry", default="ds2")
    parser.add_argument("--replicas", type=int, default=10, help="times each file is streamed")
    parser.add_argument("--phases", default="prep-low,prep-high", help="prep-low, prep-high, train-low, train-high, fit-high")
    parser.add_argument("--steps", type=int, default=5, help="timed Adam steps in the train phases")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args)))
        return
    base = [a for a in sys.argv[1:]]
    for phase in args.phases.split(","):
        proc = subprocess.run([sys.executable, __file__, *base, "--phase", phase], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"phase {phase} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        line = (f"{phase:10s} {r['rows_per_side']} vs {r['rows_per_side']} showers, {r['columns']} columns: "
                f"inputs {r['input_gib']:.2f} GiB, peak RSS {r['peak_rss_gib']:.2f} GiB, preparation {r['prep_s']:.0f} s")  # fmt: skip
        if "s_per_step" in r:
            line += (f"; {r['s_per_step']:.2f} s per official Adam step x {r['steps_per_epoch']} steps/epoch x 50 epochs "
                     f"= {r['extrapolated_50_epochs_h']:.1f} h extrapolated ({args.threads} thread(s))")  # fmt: skip
        if "auc" in r:
            line += f"; official cls-high AUC {r['auc']:.4f} (best epoch {r['best_epoch']}), fit {r['fit_s']:.0f} s"
        print(line, flush=True)


if __name__ == "__main__":
    main()
