"""Quality and speed of a trained model against held-out detailed-MC showers, per number of network
evaluations (NFE), next to calibrated GFLASH: the table of the model issue.

For each NFE the model generates showers for the reference's incident energies (one thread, batch 1000,
CPU time measured), and the evaluation suite compares them with the reference with its default (official
CaloChallenge) conventions: classifier AUC on low-level (voxels) and high-level features (mean and std
over the classifier runs), FPD and KPD with their errors, the separation power of E_total/E_inc and the
mean separation power of the layer energies and of the sparsity, the separation power of the voxel spectrum,
and the mean hits per shower (all, and in the 0.1-decade windows at 1, 10 and 100 GeV) of the reference and
the sample. Each NFE is also timed at batch 1 (one ``sample`` call per shower, what a simulation framework
calling per shower pays). ``calogen bench`` draws such figures against time. The detailed MC is timed (CPU time) on log-uniform energies in
1-100 GeV and 1 GeV-1 TeV, and the speed-up of every generator over it is printed for both ranges (the
model's cost does not depend on the energy; GFLASH's does, so it is timed on the same energies).

Usage:
    NUMBA_CACHE_DIR=.cache/numba python benchmarks/bench_model_table.py --model DIR --reference TEST.h5
        [--n 10000] [--nfe 1 2 4 8 16 32] [--sampler euler] [--mc-showers 200] [--batch1-showers 200] [--out table.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from calogen.eval.evaluate import evaluate
from calogen.eval.settings import EvaluationSettings
from calogen.generator import Generator
from calogen.io import ShowerFile, write_showers
from calogen.models import load
from calogen.sim.full import FullSimulation
from calogen.sim.gflash import GflashSimulation

RANGES_GEV = {"1-100 GeV": (1.0, 100.0), "1 GeV-1 TeV": (1.0, 1000.0)}
HIT_WINDOWS_GEV = {"1 GeV": (1.0, 1.26), "10 GeV": (8.9, 11.2), "100 GeV": (79.4, 100.0)}


def cpu_ms_per_shower(generator: Generator, energies: np.ndarray, *, batch_size: int | None = None) -> tuple[np.ndarray, float]:
    """Showers and CPU milliseconds per shower of ``generator.sample`` on ``energies`` (MeV)."""
    start = time.process_time()
    kwargs = {"batch_size": batch_size} if batch_size else {}
    showers = generator.sample(energies, seed=1, **kwargs)
    return showers, (time.process_time() - start) / len(energies) * 1e3


def batch1_ms_per_shower(generator: Generator, energies: np.ndarray) -> float:
    """CPU milliseconds per shower when every shower is its own ``sample`` call."""
    generator.sample(energies[:1], seed=0)  # warm-up outside the timing
    start = time.process_time()
    for k, e in enumerate(energies):
        generator.sample(np.array([e]), seed=k)
    return (time.process_time() - start) / len(energies) * 1e3


def hits_in_windows(energies: np.ndarray, showers: np.ndarray, threshold: float) -> dict[str, float]:
    """Mean hits per shower (voxels at or above ``threshold``) in each of :data:`HIT_WINDOWS_GEV`."""
    hits = (showers >= threshold).sum(axis=1)
    out = {}
    for label, (lo, hi) in HIT_WINDOWS_GEV.items():
        rows = (energies >= lo * 1e3) & (energies <= hi * 1e3)
        out[label] = float(hits[rows].mean()) if rows.any() else float("nan")
    return out


def log_uniform(lo_gev: float, hi_gev: float, n: int, seed: int) -> np.ndarray:
    """``n`` energies in MeV, log-uniform in ``[lo, hi]`` GeV."""
    return np.exp(np.random.default_rng(seed).uniform(np.log(lo_gev * 1e3), np.log(hi_gev * 1e3), n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--reference", type=Path, required=True, help="held-out detailed-MC showers")
    parser.add_argument("--n", type=int, default=10_000, help="showers per sample")
    parser.add_argument("--nfe", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--mc-showers", type=int, default=200, help="detailed-MC showers timed per energy range")
    parser.add_argument("--batch1-showers", type=int, default=200, help="showers timed at batch 1 per NFE")
    parser.add_argument("--metrics", default="hist,cls-low,cls-high,fpd,kpd,families")
    parser.add_argument("--fast-classifier", action="store_true", help="calogen's fast classifier instead of the official settings")
    parser.add_argument("--out", type=Path, help="write the table as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)

    model = load(args.model)
    gflash = GflashSimulation(model.geometry)
    with ShowerFile(args.reference, model.geometry) as f:
        ref = f.read(0, args.n)
    energies = ref.energies[:, 0].astype(np.float64)

    mc = FullSimulation(model.geometry, "e-")
    mc.sample(np.full(2, 1e3), seed=0)  # compile outside the timing
    speed: dict[str, dict[str, float]] = {"mc": {}, "gflash": {}}
    for label, (lo, hi) in RANGES_GEV.items():
        e_range = log_uniform(lo, hi, args.mc_showers, seed=7)
        speed["mc"][label] = cpu_ms_per_shower(mc, e_range)[1]
        speed["gflash"][label] = cpu_ms_per_shower(gflash, log_uniform(lo, hi, 2000, seed=8))[1]
        print(f"detailed MC {label}: {speed['mc'][label]:.1f} ms/shower; GFLASH {speed['gflash'][label]:.3f}", flush=True)

    rows: dict[str, dict[str, float]] = {}
    threshold = float(model.geometry.threshold)
    hits = {"mc": hits_in_windows(energies, ref.showers, threshold)}
    with tempfile.TemporaryDirectory() as tmp:
        ref_path = Path(tmp) / "reference.h5"
        write_showers(ref_path, ref.energies, ref.showers)
        samples = {}
        for nfe in args.nfe:
            showers, ms = cpu_ms_per_shower(model.using(nfe=nfe, sampler=args.sampler), energies, batch_size=args.batch)
            samples[f"nfe{nfe}"] = Path(tmp) / f"nfe{nfe}.h5"
            write_showers(samples[f"nfe{nfe}"], ref.energies, showers)
            ms1 = batch1_ms_per_shower(model.using(nfe=nfe, sampler=args.sampler), energies[: args.batch1_showers])
            rows[f"nfe{nfe}"] = {"ms/shower": ms, "ms/shower b1": ms1}
            hits[f"nfe{nfe}"] = hits_in_windows(energies, showers, threshold)
            print(f"NFE {nfe}: {ms:.2f} ms/shower (CPU, batch {args.batch}), {ms1:.2f} at batch 1", flush=True)
        showers, _ = cpu_ms_per_shower(gflash, energies)
        samples["gflash"] = Path(tmp) / "gflash.h5"
        write_showers(samples["gflash"], ref.energies, showers)
        hits["gflash"] = hits_in_windows(energies, showers, threshold)
        rows["gflash"] = {"ms/shower": speed["gflash"]["1-100 GeV"], "ms/shower b1": batch1_ms_per_shower(gflash, energies[: args.batch1_showers])}
        settings = EvaluationSettings(metrics=tuple(args.metrics.split(",")), official_classifier=not args.fast_classifier)
        record = evaluate(ref_path, samples, model.geometry, Path(tmp) / "eval", settings=settings, progress=True)

    for sample in record["samples"]:
        row = rows[sample["name"]]
        groups = sample["separation_power_summary"].get("mean_by_group", {})
        row["S E_ratio"] = groups.get("e_ratio", float("nan"))
        row["S layer energies"] = groups.get("e_layer", float("nan"))
        row["S sparsity"] = groups.get("sparsity", float("nan"))
        row["S voxel spectrum"] = groups.get("voxel_spectrum", float("nan"))
        per_shower = (sample.get("families") or {}).get("mean_hits_per_shower", {})
        row["hits MC"], row["hits"] = per_shower.get("reference", float("nan")), per_shower.get("generated", float("nan"))
        for family in (sample.get("families") or {}).get("families", []):
            row[f"AUC family {family['family']}"] = family["auc_mean"]
        for c in sample["classifiers"]:
            row[f"AUC {c['kind']}"] = c["auc_mean"]
            row[f"AUC {c['kind']} std"] = c["auc_std"]
        for key in ("fpd", "kpd"):
            if key in sample["distances"]:
                row[key.upper()] = sample["distances"][key]["value"]
                row[f"{key.upper()} error"] = sample["distances"][key]["error"]
        for label in RANGES_GEV:
            cost = speed["gflash"][label] if sample["name"] == "gflash" else row["ms/shower"]
            row[f"speed-up {label}"] = speed["mc"][label] / cost

    spread = {"AUC cls-low": "AUC cls-low std", "AUC cls-high": "AUC cls-high std", "FPD": "FPD error", "KPD": "KPD error"}
    columns = ["AUC cls-low", "AUC cls-high", "FPD", "KPD", "S E_ratio", "S layer energies", "S sparsity", "S voxel spectrum", "hits MC", "hits",
               "AUC family hits", "AUC family voxel_spectrum",
               "ms/shower b1", "ms/shower", *(f"speed-up {r}" for r in RANGES_GEV)]  # fmt: skip
    print("| sample | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in rows.items():
        cells = [f"{row.get(c, float('nan')):.4g}" + (f" ± {row[spread[c]]:.2g}" if spread.get(c) in row else "") for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("mean hits per shower in energy windows: " + "; ".join(f"{k}: " + ", ".join(f"{w} {v:.1f}" for w, v in h.items()) for k, h in hits.items()))
    if args.out:
        table = {"speed_ms_per_shower": speed, "rows": rows, "hits_in_windows": hits, "n": args.n, "sampler": args.sampler, "evaluation_settings": record["settings"],
                 "conventions": record.get("conventions")}
        args.out.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
