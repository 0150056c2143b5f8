"""Direction conditioning on DS2: train at polar angles 0/10/20/30 degrees, generate at 15 (never seen).

Stages, each skipped when its output exists (rerun the same command to resume):

1. detailed-MC electrons (``calogen simulate --engine full``), incident energies log-uniform over 1-100 GeV
   as the shipped ``cpu-small-ds2`` model: ``--n-train`` showers at each training angle (phi 0, seeds
   ``--train-seeds``), ``--n-heldout`` held out at 15 degrees and at 20 (a trained angle, a fresh seed);
2. the four training files interleaved row by row (angle 0, 10, 20, 30, 0, ...) into ``train.h5`` with
   ``incident_directions`` (normal incidence files carry none: (0, 0) is written for them);
3. ``calogen train`` with ``cpu-small`` + ``directions: true`` (``preset.json``), ``calogen fit-occupancy``,
   ``calogen tune-adversarial`` (``--tune-steps``, direction-aware critic and ``--feature-matching``; 0 steps: no tune),
   then ``calogen generate`` at 15 and 20 degrees with the held-out files' energies;
4. the centre of energy along the inclination direction x (``phi = 0``): per shower and layer the
   energy-weighted mean of ``x = r cos(alpha)`` over the voxel centres (:mod:`calogen.features`), averaged
   over the showers with energy in the layer. The readout centres every layer's bins on the primary's
   straight trajectory at the layer's depth centre ``z_l``, so the shift from the entry point is
   ``X_l = z_l tan(theta) + <x>_l``; the model learns only the residual ``<x>_l``. Both are compared with
   the MC per layer, for layers holding at least ``--min-share`` of the MC's deposited energy;
5. ``calogen evaluate`` (fast classifier, 3 runs: AUC low and high, FPD) at 15 and at 20 degrees; the
   criterion of issue 16 is ``AUC(15) <= AUC(20) + 0.05`` and ``|X_l(model) / X_l(MC) - 1| <= 5%``.
   ``--diagnose-angles`` adds held-out MC, generation and evaluation at further angles (seeds 37, 38, ...).

The script takes ``--lock`` (default ``/tmp/calogen-heavy.lock``) itself, once per group of steps (MC, training,
evaluation); do not wrap it in ``flock`` on the same file, which would deadlock. The figures go to
``results.json`` in the output folder and to stdout.

Usage:
    NUMBA_CACHE_DIR=.cache/numba OMP_NUM_THREADS=1 python benchmarks/bench_directions.py --out /tmp/dirs \\
        [--n-train 5000] [--n-heldout 10000] [--steps 4000] [--occupancy-steps 1500] [--diagnose-angles 0 10 30]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calogen.features import features_from_file
from calogen.geometry import Geometry
from calogen.io import ShowerFile, ShowerWriter, atomic_path
from calogen.train.config import Preset

LOCK = "/tmp/calogen-heavy.lock"
CALOGEN = str(Path(sys.executable).with_name("calogen"))
ENERGY = "loguniform:1GeV:100GeV"  # the shipped cpu-small-ds2 spectrum (its README and provenance.json)
TRAIN_ANGLES = (0.0, 10.0, 20.0, 30.0)
TARGET, CONTROL = 15.0, 20.0
SHIFT_TOLERANCE, AUC_TOLERANCE = 0.05, 0.05


@dataclass(frozen=True)
class McRun:
    """One detailed-MC file: polar angle (degrees, phi 0), seed, showers and path."""

    theta: float
    seed: int
    n: int
    path: Path


_held = 0


@contextlib.contextmanager
def heavy_lock() -> Iterator[None]:
    """Hold the heavy-work lock (re-entrant: nested uses keep the outer hold), so a group of steps shares one wait."""
    global _held
    if _held:
        _held += 1
        yield
        _held -= 1
        return
    with open(LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        _held = 1
        try:
            yield
        finally:
            _held = 0
            fcntl.flock(fh, fcntl.LOCK_UN)


def heavy(cmd: list[str]) -> None:
    """Run a calogen command holding the heavy-work lock; exit on failure."""
    with heavy_lock():
        print("$", " ".join(cmd), flush=True)
        if subprocess.run(cmd, check=False).returncode:
            raise SystemExit(f"bench_directions: failed: {' '.join(cmd)}")


def tag(theta: float) -> str:
    return f"theta{theta:02.0f}"


def simulate(run: McRun) -> None:
    """``calogen simulate`` one MC file unless it exists (``--resume`` continues an interrupted one)."""
    if run.path.exists():
        return
    heavy([CALOGEN, "simulate", "--engine", "full", "--geometry", "ds2", "--particle", "e-", "--energy", ENERGY,
           "--theta", f"{run.theta:g}", "--phi", "0", "--n", str(run.n), "--seed", str(run.seed), "-o", str(run.path),
           "--chunk-size", "1000", "--resume", "--no-progress"])  # fmt: skip


def interleave(runs: list[McRun], out: Path, chunk: int = 500) -> None:
    """Write the runs' showers row by row in turn (run 0 row 0, run 1 row 0, ...) with their directions."""
    if out.exists():
        return
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(ShowerFile(r.path)) for r in runs]
        _interleave_files(files, runs, out, chunk)


def _interleave_files(files: list[ShowerFile], runs: list[McRun], out: Path, chunk: int) -> None:
    n = {f.n_showers for f in files}
    if len(n) != 1:
        raise SystemExit(f"training files differ in length ({sorted(n)}); give each the same --n-train")
    total = n.pop()
    with ShowerWriter(out, files[0].n_voxels, attrs={"geometry": "ds2", "angles_deg": [r.theta for r in runs]}, directions=True) as w:
        for start in range(0, total, chunk):
            parts = [f.read(start, min(start + chunk, total)) for f in files]
            rows = len(parts[0])
            energies = np.stack([p.energies.reshape(-1) for p in parts], axis=1).reshape(-1)
            showers = np.stack([p.showers for p in parts], axis=1).reshape(rows * len(parts), -1)
            dirs = [p.directions if p.directions is not None else np.tile([[math.radians(r.theta), 0.0]], (rows, 1)) for p, r in zip(parts, runs)]
            w.append(energies, showers, np.stack(dirs, axis=1).reshape(-1, 2))


def write_preset(path: Path, steps: int, seed: int) -> None:
    """``cpu-small`` with every network conditioned on the direction; only settings that differ from the defaults."""
    small = Preset.resolve("cpu-small").to_dict()
    defaults = Preset("defaults").to_dict()
    preset = {section: {k: v for k, v in values.items() if v != defaults[section][k]} for section, values in small.items()}
    preset["model"]["directions"] = True
    preset["train"].update(max_steps=steps, seed=seed)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(preset, indent=1))


def train(out: Path, data: Path, preset: Path) -> Path:
    """Train (or resume) the model; the stamp ``train.ok`` marks a finished run."""
    model, stamp = out / "model", out / "train.ok"
    if not stamp.exists():
        resume = ["--resume"] if model.exists() else []
        heavy([CALOGEN, "train", "--data", str(data), "--geometry", "ds2", "--preset", str(preset), "--out", str(model), "--no-progress", *resume])
        stamp.touch()
    return model


def fit_occupancy(out: Path, model: Path, data: Path, steps: int) -> Path:
    """Fit the occupancy stage into a copy ``model-occ`` of the model."""
    occ, stamp = out / "model-occ", out / "occupancy.ok"
    if not stamp.exists():
        shutil.rmtree(occ, ignore_errors=True)
        heavy([CALOGEN, "fit-occupancy", str(model), "--data", str(data), "--steps", str(steps), "--out", str(occ)])
        stamp.touch()
    return occ


def tune(out: Path, model: Path, data: Path, steps: int, feature_matching: float) -> Path:
    """``calogen tune-adversarial`` the model into ``model-tuned`` (direction-aware critic, conditional feature matching)."""
    tuned = out / "model-tuned"
    if not tuned.exists():
        resume = ["--resume"] if tuned.with_name(tuned.name + ".partial").exists() else []
        heavy([CALOGEN, "tune-adversarial", str(model), "--data", str(data), "--out", str(tuned), "--steps", str(steps),
               "--feature-matching", f"{feature_matching:g}", *resume])  # fmt: skip
    return tuned


def generate(model: Path, reference: McRun, out: Path, *, nfe: int, seed: int) -> None:
    """Generate at the reference's angle for its incident energies."""
    if not out.exists():
        heavy([CALOGEN, "generate", str(model), "--energies-from", str(reference.path), "--theta", f"{reference.theta:g}", "--phi", "0",
               "--nfe", str(nfe), "--seed", str(seed), "-o", str(out), "--no-progress"])  # fmt: skip


def evaluate(reference: Path, generated: Path, out: Path) -> dict[str, float]:
    """AUC low, AUC high (fast classifier, 3 runs; mean and std) and FPD of ``generated`` against ``reference``."""
    if not (out / "metrics.json").exists():
        heavy([CALOGEN, "evaluate", str(reference), f"model={generated}", "--fast-classifier", "--metrics", "cls-low,cls-high,fpd",
               "--out", str(out), "--quiet"])  # fmt: skip
    sample = json.loads((out / "metrics.json").read_text())["samples"][0]
    row = {}
    for c in sample["classifiers"]:
        row[f"auc_{c['kind']}"], row[f"auc_{c['kind']}_std"] = c["auc_mean"], c["auc_std"]
    row["fpd"], row["fpd_error"] = sample["distances"]["fpd"]["value"], sample["distances"]["fpd"]["error"]
    return row


def layer_centres(path: Path, geometry: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per layer: mean centre of energy ``<x>_l`` in mm over showers with energy there, its standard error, and
    the layer's share of the deposited energy."""
    f = features_from_file(path, geometry)
    has = f.e_layer > 0
    x = np.where(has, f.eta_centre, np.nan)
    n = has.sum(axis=0)
    mean = np.nanmean(x, axis=0)
    sem = np.nanstd(x, axis=0) / np.sqrt(np.maximum(n, 1))
    share = f.e_layer.sum(axis=0, dtype=np.float64) / f.e_layer.sum(dtype=np.float64)
    return mean, sem, share


def shift_table(mc: Path, gen: Path, theta: float, min_share: float) -> dict[str, object]:
    """Centre-of-energy shift per layer of model vs MC at ``theta`` degrees (phi 0), layers above ``min_share``."""
    geometry = Geometry.builtin("ds2")
    with heavy_lock():
        mc_x, mc_sem, share = layer_centres(mc, geometry)
        gen_x, gen_sem, _ = layer_centres(gen, geometry)
    z = np.array([0.5 * (layer.z_range[0] + layer.z_range[1]) for layer in geometry.layers])
    axis = z * math.tan(math.radians(theta))
    layers = np.flatnonzero(share >= min_share)
    mc_shift, gen_shift = axis + mc_x, axis + gen_x
    rel = np.abs(gen_shift[layers] / mc_shift[layers] - 1.0)
    resid = gen_x[layers] - mc_x[layers]
    pull = resid / np.hypot(mc_sem[layers], gen_sem[layers])
    return {
        "theta_deg": theta, "layers": layers.tolist(), "z_mm": z[layers].tolist(), "energy_share": share[layers].tolist(),
        "mc_shift_mm": mc_shift[layers].tolist(), "model_shift_mm": gen_shift[layers].tolist(), "rel_diff": rel.tolist(),
        "mc_residual_mm": mc_x[layers].tolist(), "model_residual_mm": gen_x[layers].tolist(),
        "mc_residual_sem_mm": mc_sem[layers].tolist(), "residual_pull": pull.tolist(),
        "max_rel_diff": float(rel.max()), "mean_rel_diff": float(rel.mean()),
        "max_abs_residual_diff_mm": float(np.abs(resid).max()), "mean_abs_residual_diff_mm": float(np.abs(resid).mean()),
        "residual_slope": float(np.polyfit(mc_x[layers], gen_x[layers], 1)[0]),
    }  # fmt: skip


def print_shifts(t: dict[str, object]) -> None:
    print(f"\ncentre of energy along x at {t['theta_deg']:g} deg (layers with >= min share of the MC energy)")
    print(" layer  z/mm  share | X MC/mm  X model/mm  rel.diff | <x> MC/mm (sem)  <x> model/mm  pull")
    cols = zip(t["layers"], t["z_mm"], t["energy_share"], t["mc_shift_mm"], t["model_shift_mm"], t["rel_diff"],
               t["mc_residual_mm"], t["mc_residual_sem_mm"], t["model_residual_mm"], t["residual_pull"])  # fmt: skip
    for l, z, s, xm, xg, r, rm, se, rg, p in cols:
        print(f" {l:5d} {z:5.1f} {s:6.3f} | {xm:7.2f} {xg:10.2f} {100 * r:8.2f}% | {rm:8.3f} ({se:.3f}) {rg:12.3f} {p:6.1f}")
    print(f" shift rel.diff: max {100 * t['max_rel_diff']:.2f}%, mean {100 * t['mean_rel_diff']:.2f}%; "
          f"residual |model - MC|: max {t['max_abs_residual_diff_mm']:.3f} mm, mean {t['mean_abs_residual_diff_mm']:.3f} mm; "
          f"slope model vs MC residual {t['residual_slope']:.2f}")  # fmt: skip


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder (reused: finished stages are skipped)")
    ap.add_argument("--n-train", type=int, default=5000, help="MC showers per training angle")
    ap.add_argument("--n-heldout", type=int, default=10_000, help="held-out MC showers per evaluated angle")
    ap.add_argument("--train-seeds", type=int, nargs=4, default=[31, 32, 33, 34], help="MC seeds of the angles 0, 10, 20, 30")
    ap.add_argument("--heldout-seeds", type=int, nargs=2, default=[35, 36], help="MC seeds of the held-out 15 and 20 degrees")
    ap.add_argument("--steps", type=int, default=4000, help="training steps")
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--occupancy-steps", type=int, default=1500)
    ap.add_argument("--tune-steps", type=int, default=600, help="tune-adversarial steps after the occupancy fit (0: no tune)")
    ap.add_argument("--feature-matching", type=float, default=1.0, help="tune-adversarial --feature-matching weight")
    ap.add_argument("--nfe", type=int, default=2)
    ap.add_argument("--gen-seed", type=int, default=123)
    ap.add_argument("--min-share", type=float, default=0.01, help="layers compared: at least this share of the MC energy")
    ap.add_argument("--lock", default=LOCK, help="lock file every heavy step holds (default: %(default)s)")
    ap.add_argument("--diagnose-angles", type=float, nargs="*", default=[], help="also evaluate at these angles (MC seeds 37, 38, ...)")
    return ap.parse_args()


def main() -> None:
    global LOCK
    args = parse_args()
    LOCK = args.lock
    mc = args.out / "mc"
    mc.mkdir(parents=True, exist_ok=True)
    runs = [McRun(t, s, args.n_train, mc / f"train_{tag(t)}.h5") for t, s in zip(TRAIN_ANGLES, args.train_seeds)]
    held = {t: McRun(t, s, args.n_heldout, mc / f"heldout_{tag(t)}.h5") for t, s in zip((TARGET, CONTROL), args.heldout_seeds)}
    held.update({t: McRun(t, 37 + i, args.n_heldout, mc / f"heldout_{tag(t)}.h5") for i, t in enumerate(args.diagnose_angles)})
    data, preset = args.out / "train.h5", args.out / "preset.json"
    with heavy_lock():  # one wait per group of steps on the shared machine
        for run in (*runs, *held.values()):
            simulate(run)
        interleave(runs, data)
    if not preset.exists():
        write_preset(preset, args.steps, args.train_seed)
    with heavy_lock():
        model = fit_occupancy(args.out, train(args.out, data, preset), data, args.occupancy_steps)
        if args.tune_steps:
            model = tune(args.out, model, data, args.tune_steps, args.feature_matching)
    results: dict[str, object] = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "shifts": {}, "evaluation": {}}
    with heavy_lock():
        for theta in (TARGET, CONTROL, *args.diagnose_angles):
            gen = args.out / f"gen_{tag(theta)}.h5"
            generate(model, held[theta], gen, nfe=args.nfe, seed=args.gen_seed)
            if theta in (TARGET, CONTROL):
                results["shifts"][tag(theta)] = table = shift_table(held[theta].path, gen, theta, args.min_share)
                print_shifts(table)
            results["evaluation"][tag(theta)] = row = evaluate(held[theta].path, gen, args.out / f"eval_{tag(theta)}")
            print(f"{theta:g} deg: AUC low {row['auc_cls-low']:.3f} +- {row['auc_cls-low_std']:.3f}, AUC high {row['auc_cls-high']:.3f} "
                  f"+- {row['auc_cls-high_std']:.3f}, FPD {row['fpd']:.4f} +- {row['fpd_error']:.4f}", flush=True)  # fmt: skip
    ev, shift = results["evaluation"], results["shifts"][tag(TARGET)]
    verdict = {kind: ev[tag(TARGET)][f"auc_{kind}"] <= ev[tag(CONTROL)][f"auc_{kind}"] + AUC_TOLERANCE for kind in ("cls-low", "cls-high")}
    verdict["shift"] = shift["max_rel_diff"] <= SHIFT_TOLERANCE
    results["criterion"] = verdict
    print(f"\ncriterion: shift within 5% at 15 deg {verdict['shift']}; AUC(15) <= AUC(20) + 0.05: low {verdict['cls-low']}, high {verdict['cls-high']}")
    with atomic_path(args.out / "results.json") as tmp:
        Path(tmp).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
