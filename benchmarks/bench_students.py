"""One-step students against their teacher: quality on held-out detailed-MC showers and the cost per shower
at batch 1, 100 and 1000 in PyTorch and in onnxruntime, one row per (model, NFE) — the table of the
one-step-generation issue.

Every row generates showers for the reference's incident energies (batch 1000, one thread) and all rows are
evaluated in one ``calogen evaluate`` pass with its default official conventions (classifier AUC on low- and
high-level features, mean and std over runs; FPD with its error; separation power of E_total/E_inc and of the
voxel spectrum). Costs are process CPU time per shower: batch 1000 over the whole sample, batch 100 over
``--b100-showers`` in calls of 100, batch 1 over ``--batch1-showers`` single-shower ``sample`` calls; the
exported ONNX graph is timed with ``session.run`` (median over calls, one intra-op thread, noise drawn
outside) at the same batch sizes.

Usage:
    NUMBA_CACHE_DIR=.cache/numba python benchmarks/bench_students.py --reference TEST.h5 \\
        --row teacher=runs/teacher:1,2,4,8 --row consistency=runs/cd:1,2 --row average-velocity=runs/av:1,2 [--out table.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_latency import median_ms, onnx_runner
from bench_model_table import batch1_ms_per_shower, cpu_ms_per_shower

from calogen.eval.evaluate import evaluate
from calogen.eval.settings import EvaluationSettings
from calogen.io import ShowerFile, write_showers
from calogen.models import load

BATCHES = (1, 100, 1000)
COLUMNS = ("AUC cls-low", "AUC cls-high", "FPD", "S E_ratio", "S voxel spectrum", *(f"ms b{b}" for b in BATCHES), *(f"ORT ms b{b}" for b in BATCHES))


def parse_row(spec: str) -> tuple[str, Path, list[int]]:
    """``LABEL=DIR:NFE,NFE`` -> label, model directory, NFEs."""
    label, rest = spec.split("=", 1)
    directory, nfes = rest.rsplit(":", 1)
    return label, Path(directory), [int(n) for n in nfes.split(",")]


def onnx_ms(model, nfe: int, energies: np.ndarray, path: Path) -> dict[int, float]:  # type: ignore[no-untyped-def]
    """Median CPU ms per shower of ``session.run`` of the graph exported to ``path`` at each of :data:`BATCHES`."""
    prepare = onnx_runner(model, nfe, model.sampler, path)
    out = {}
    for batch in BATCHES:
        run = prepare(np.resize(energies, batch))
        out[batch] = median_ms(lambda _: run(), max(3, 200 // batch), time.process_time) / batch
    return out


def b100_ms(model, energies: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    """CPU ms per shower of ``sample`` calls of 100 showers each."""
    start = time.process_time()
    for k, s in enumerate(range(0, len(energies), 100)):
        model.sample(energies[s : s + 100], seed=k)
    return (time.process_time() - start) / len(energies) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="held-out detailed-MC showers")
    parser.add_argument("--row", action="append", required=True, metavar="LABEL=DIR:NFE,...", help="a model and its NFEs (repeatable)")
    parser.add_argument("--n", type=int, default=10_000, help="showers per sample")
    parser.add_argument("--batch1-showers", type=int, default=200)
    parser.add_argument("--b100-showers", type=int, default=2000)
    parser.add_argument("--metrics", default="hist,cls-low,cls-high,fpd")
    parser.add_argument("--fast-classifier", action="store_true", help="calogen's fast classifier instead of the official settings")
    parser.add_argument("--out", type=Path, help="write the table as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        samples, geometry, ref_path = {}, None, tmp / "reference.h5"
        for label, directory, nfes in map(parse_row, args.row):
            base = load(directory)
            if geometry is None:
                geometry = base.geometry
                with ShowerFile(args.reference, geometry) as f:
                    ref = f.read(0, args.n)
                write_showers(ref_path, ref.energies, ref.showers)
                energies = ref.energies[:, 0].astype(np.float64)
            for nfe in nfes:
                name = f"{label} nfe{nfe}"
                model = base.using(nfe=nfe)
                showers, ms = cpu_ms_per_shower(model, energies, batch_size=1000)
                samples[name] = tmp / f"{label}-{nfe}.h5"
                write_showers(samples[name], ref.energies, showers)
                row = rows[name] = {"ms b1000": ms, "ms b100": b100_ms(model, energies[: args.b100_showers]),
                                    "ms b1": batch1_ms_per_shower(model, energies[: args.batch1_showers])}  # fmt: skip
                row.update({f"ORT ms b{b}": v for b, v in onnx_ms(model, nfe, energies, tmp / f"{label}-{nfe}.onnx").items()})
                print(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
        settings = EvaluationSettings(metrics=tuple(args.metrics.split(",")), official_classifier=not args.fast_classifier)
        record = evaluate(ref_path, samples, geometry, tmp / "eval", settings=settings, progress=True)

    for sample in record["samples"]:
        row = rows[sample["name"]]
        groups = sample["separation_power_summary"].get("mean_by_group", {})
        row["S E_ratio"], row["S voxel spectrum"] = groups.get("e_ratio", float("nan")), groups.get("voxel_spectrum", float("nan"))
        for c in sample["classifiers"]:
            row[f"AUC {c['kind']}"], row[f"AUC {c['kind']} std"] = c["auc_mean"], c["auc_std"]
        if "fpd" in sample["distances"]:
            row["FPD"], row["FPD std"] = sample["distances"]["fpd"]["value"], sample["distances"]["fpd"]["error"]
    print("| row | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, row in rows.items():
        cells = [f"{row.get(c, float('nan')):.4g}" + (f" ± {row[c + ' std']:.2g}" if c + " std" in row else "") for c in COLUMNS]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "n": args.n, "evaluation_settings": record["settings"]}, indent=1))


if __name__ == "__main__":
    main()
