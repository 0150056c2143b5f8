"""Check calogen's evaluation against the official CaloChallenge code itself, on the same two files.

Runs the official code (a checkout of ``code/`` of github.com/CaloChallenge/homepage, with its own
Python environment: numpy, scipy, h5py, matplotlib, torch, scikit-learn, jetnet) next to calogen and
prints, histogram by histogram, both separation powers (every official histogram: those of
``plot_histograms`` and ``plot_cell_dist`` plus the helper's sparsity, EC r and width r, 362 on DS2),
how many agree to 1e-6, and FPD/KPD both ways (official: ``evaluate.py -m fpd``). ``--cls-high`` also
trains the official high-level classifier (official functions, split 60/20/20 as the official script
does for 100k files) and calogen's with ``ClassifierSettings.official()`` on the same vectors.

The official code is only run, never imported into calogen: a small driver (written to the work
directory) calls its functions with the arguments its ``__main__`` block would pass. Plots are not
saved (``savefig`` is disabled in the driver; the official plots need LaTeX).

Usage:
    python benchmarks/check_official.py --official-code /path/to/homepage/code \\
        --official-python /path/to/venv/bin/python --dataset 2 \\
        --reference ref.h5 --generated gen.h5 [--n 2000] [--cls-high] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from calogen.eval import distances
from calogen.eval.histograms import compare_features
from calogen.features import features_from_file, high_level_vector
from calogen.geometry import Geometry
from calogen.io import ShowerFile, write_showers

GEOMETRY = {"1-photons": "ds1-photons", "1-pions": "ds1-pions", "2": "ds2", "3": "ds3"}

DRIVER = r'''
"""Official histograms (separation powers) or official cls-high, by the official functions."""
import argparse, json, os, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import h5py
sys.path.insert(0, os.getcwd())  # the official code/ folder
import evaluate as ev  # the official evaluate.py (its __main__ block does not run)
import evaluate_plotting_helper as helper
import HighLevelFeatures as HLF

plt.rc("text", usetex=False)
plt.savefig = lambda *a, **k: None  # numbers only: the official plots need LaTeX
plt.tight_layout = lambda *a, **k: None
task, dataset, ref_path, gen_path, out_dir = sys.argv[1:6]
particle = {"1-photons": "photon", "1-pions": "pion", "2": "electron", "3": "electron"}[dataset]
min_energy = {"1-photons": 1.0, "1-pions": 1.0, "2": 0.5e-3 / 0.033, "3": 0.5e-3 / 0.033}[dataset]
args = argparse.Namespace(mode="hist-chi", dataset=dataset, output_dir=out_dir, x_scale="log", min_energy=min_energy)
files, hlfs, showers = {}, {}, {}
for key, path in (("ref", ref_path), ("gen", gen_path)):
    files[key] = h5py.File(path, "r")
    shower, energy = ev.extract_shower_and_energy(files[key], key)
    showers[key] = np.where(shower < min_energy, np.zeros_like(shower), shower)
    hlfs[key] = HLF.HighLevelFeatures(particle, filename="binning_dataset_{}.xml".format(dataset.replace("-", "_")))
    hlfs[key].CalculateFeatures(showers[key])
    hlfs[key].Einc = energy
if task == "hist":
    ev.plot_histograms(hlfs["gen"], hlfs["ref"], args)
    ev.plot_cell_dist(showers["gen"], showers["ref"], args)
    for plot in (helper.plot_sparsity, helper.plot_ECR, helper.plot_ECWidthR):
        plot(hlfs["gen"], hlfs["ref"], args)
    for key in ("ref", "gen"):  # the official high-level vector (cls-high and FPD/KPD input), label dropped
        vector = ev.prepare_high_data_for_classifier(files[key], hlfs[key], 0.0, threshold=min_energy)[:, :-1]
        np.save(os.path.join(out_dir, "official_vector_{}.npy".format(key)), vector)
else:  # cls-high with the official defaults, 60/20/20 split of the given showers
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    args.mode = "cls-high"
    args.cls_n_layer, args.cls_n_hidden, args.cls_dropout_probability = 2, 2048, 0.0
    args.cls_batch_size, args.cls_n_epochs, args.cls_lr = 1000, 50, 2e-4
    args.save_mem, args.device = False, torch.device("cpu")
    source = ev.prepare_high_data_for_classifier(files["gen"], hlfs["gen"], 0.0, threshold=min_energy)
    reference = ev.prepare_high_data_for_classifier(files["ref"], hlfs["ref"], 1.0, threshold=min_energy)
    np.save(os.path.join(out_dir, "official_vector_ref.npy"), reference[:, :-1])
    np.save(os.path.join(out_dir, "official_vector_gen.npy"), source[:, :-1])
    train, test, val = ev.ttv_split(source, reference)
    model = ev.DNN(num_layer=2, num_hidden=2048, input_dim=train.shape[1] - 1, dropout_probability=0.0)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-4)
    loaders = [DataLoader(TensorDataset(torch.tensor(d)), batch_size=1000, shuffle=i == 0) for i, d in enumerate((train, test, val))]
    ev.train_and_evaluate_cls(model, loaders[0], loaders[1], optimiser, args)
    model = ev.load_classifier(model, args)
    with torch.no_grad():
        acc, auc, jsd = ev.evaluate_cls(model, loaders[2], args, final_eval=True, calibration_data=loaders[1])
    with open(os.path.join(out_dir, "cls_high.json"), "w") as f:
        json.dump({"auc": float(auc), "jsd": float(jsd), "best_epoch": args.best_epoch, "n_train": len(train)}, f)
'''

OFFICIAL_NAMES = [
    (re.compile(r"^Etot / Einc$"), lambda m: "e_ratio"),
    (re.compile(r"^Etot / Einc at E = ([0-9.e+]+)$"), lambda m: f"e_ratio_einc_{int(float(m[1]))}MeV"),
    (re.compile(r"^E layer (\d+)$"), lambda m: f"e_layer_{m[1]}"),
    (re.compile(r"^EC Eta layer (\d+)$"), lambda m: f"eta_centre_{m[1]}"),
    (re.compile(r"^EC Phi layer (\d+)$"), lambda m: f"phi_centre_{m[1]}"),
    (re.compile(r"^Width Eta layer (\d+)$"), lambda m: f"eta_width_{m[1]}"),
    (re.compile(r"^Width Phi layer (\d+)$"), lambda m: f"phi_width_{m[1]}"),
    (re.compile(r"^Voxel distribution$"), lambda m: "voxel_spectrum"),
    (re.compile(r"^Sparsity layer (\d+)$"), lambda m: f"sparsity_{m[1]}"),
    (re.compile(r"^EC r layer (\d+)$"), lambda m: f"r_centre_{m[1]}"),
    (re.compile(r"^Width r layer (\d+)$"), lambda m: f"r_width_{m[1]}"),
]


def calogen_name(official: str) -> str:
    """calogen's histogram name for an entry of the official ``histogram_chi2_*.txt``."""
    for pattern, name in OFFICIAL_NAMES:
        match = pattern.match(official)
        if match:
            return name(match)
    raise ValueError(f"unknown official histogram {official!r}")


def parse_official_separations(text: str) -> dict[str, float]:
    """``{calogen name: separation power}`` from the official ``NAME: \\nVALUE\\n\\n`` entries."""
    return {calogen_name(m[1]): float(m[2]) for m in re.finditer(r"(?m)^(.+?): \n(\S+)\n", text)}


def subset(source: Path, target: Path, geometry: Geometry, n: int | None) -> int:
    """Copy the first ``n`` showers (all when None) of ``source`` to ``target``; returns the count."""
    with ShowerFile(source, geometry) as f:
        data = f.read(0, n)
    write_showers(target, data.energies, data.showers)
    return len(data.showers)


def run_official(python: str, code: Path, argv: list[str], log: Path) -> str:
    """Run the official code (cwd: its folder) and return its standard output."""
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run([python, *argv], cwd=code, env=env, capture_output=True, text=True)
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"official code failed ({' '.join(argv[:2])}); see {log}:\n{proc.stderr[-2000:]}")
    return proc.stdout


def compare_histograms(args: argparse.Namespace, work: Path, ref: Path, gen: Path, geometry: Geometry) -> dict:
    driver = work / "official_driver.py"
    driver.write_text(DRIVER)
    hist_dir = work / "official_hist"
    hist_dir.mkdir(exist_ok=True)
    chi2 = hist_dir / f"histogram_chi2_{args.dataset}.txt"
    chi2.unlink(missing_ok=True)
    start = time.perf_counter()
    run_official(args.official_python, args.official_code, [str(driver), "hist", args.dataset, str(ref), str(gen), str(hist_dir)], work / "official_hist.log")
    official_s = time.perf_counter() - start
    official = parse_official_separations(chi2.read_text())
    start = time.perf_counter()
    features = {k: features_from_file(p, geometry) for k, p in (("ref", ref), ("gen", gen))}
    ours = {h.name: h.separation for h in compare_features(features["ref"], features["gen"])}
    calogen_s = time.perf_counter() - start
    vectors = {k: high_level_vector(f) for k, f in features.items()}
    official_vectors = {k: np.load(hist_dir / f"official_vector_{k}.npy") for k in vectors}
    vector_check = {
        k: {"shape": list(official_vectors[k].shape), "dtype": str(official_vectors[k].dtype),
            "identical": bool(np.array_equal(vectors[k], official_vectors[k])),
            "max_abs_difference": float(np.max(np.abs(vectors[k] - official_vectors[k])))}
        for k in vectors
    }  # fmt: skip
    rows, equal, nan_official = [], 0, []
    for name, value in official.items():
        mine = ours.get(name)
        if math.isnan(value):
            nan_official.append(name)
            continue
        same = mine is not None and abs(mine - value) <= 1e-6
        equal += same
        rows.append((name, value, mine, same))
    only_ours = sorted(set(ours) - set(official))
    print(f"\n{'histogram':<26}{'official':>14}{'calogen':>14}  equal to 1e-6")
    for name, value, mine, same in rows:
        print(f"{name:<26}{value:>14.8f}{'missing' if mine is None else f'{mine:14.8f}':>14}  {'yes' if same else 'NO'}")
    print(f"\nseparation powers equal to 1e-6: {equal} / {len(rows)} (official histograms with a value)")
    if nan_official:
        print(f"official NaN (no entry in range), not compared: {', '.join(nan_official)}")
        print(f"  calogen for these: {', '.join(f'{n}={ours[n]:.4g}' if n in ours else f'{n}=skipped' for n in nan_official)}")
    if only_ours:
        print(f"calogen histograms without an official counterpart: {', '.join(only_ours)}")
    for k, check in vector_check.items():
        print(f"official high-level vector ({k}): {check['shape']} {check['dtype']}, calogen's identical bit for bit: "
              f"{check['identical']} (max |difference| {check['max_abs_difference']:.3g})")  # fmt: skip
    print(f"time: official {official_s:.1f} s, calogen {calogen_s:.1f} s")
    return {
        "vectors": vector_check,
        "n_official": len(official), "n_compared": len(rows), "n_equal_1e-6": equal,
        "mismatches": [r[:3] for r in rows if not r[3]], "official_nan": nan_official, "only_calogen": only_ours,
        "rows": rows, "seconds": {"official": official_s, "calogen": calogen_s},
    }  # fmt: skip


def compare_distances(args: argparse.Namespace, work: Path, ref: Path, gen: Path, geometry: Geometry) -> dict:
    out_dir = work / "official_fpd"
    start = time.perf_counter()
    argv = ["evaluate.py", "-i", str(gen), "-r", str(ref), "-m", "fpd", "-d", args.dataset, "--output_dir", str(out_dir)]
    text = run_official(args.official_python, args.official_code, argv, work / "official_fpd.log")
    official_s = time.perf_counter() - start
    official = {k.lower(): (float(a), float(b)) for k, a, b in re.findall(r"(FPD|KPD) \(x10\^3\): (\S+) ± (\S+)", text)}
    start = time.perf_counter()
    vectors = [high_level_vector(features_from_file(p, geometry)) for p in (ref, gen)]
    ours = {"fpd": distances.fpd(*vectors), "kpd": distances.kpd(*vectors)}
    calogen_s = time.perf_counter() - start
    result = {"seconds": {"official": official_s, "calogen": calogen_s}, "n_columns": vectors[0].shape[1]}
    print(f"\nhigh-level vector: {vectors[0].shape[1]} columns")
    for key in ("fpd", "kpd"):
        o_value, o_error = official[key]
        mine = ours[key]
        c_value, c_error = mine.value * 1e3, mine.error * 1e3
        within = abs(c_value - o_value) <= o_error
        print(f"{key.upper()} x10^3: official {o_value:.4f} ± {o_error:.4f}   calogen {c_value:.4f} ± {c_error:.4f}   "
              f"difference {c_value - o_value:+.2e} ({'within' if within else 'OUTSIDE'} the official uncertainty)")  # fmt: skip
        result[key] = {"official": [o_value, o_error], "calogen": [c_value, c_error], "within": within}
    print(f"time: official {official_s:.1f} s, calogen {calogen_s:.1f} s")
    return result


def compare_cls_high(args: argparse.Namespace, work: Path, ref: Path, gen: Path, geometry: Geometry) -> dict:
    from calogen.eval.classifier import run_classifier
    from calogen.eval.classifier_settings import ClassifierSettings

    out_dir = work / "official_cls"
    out_dir.mkdir(exist_ok=True)
    start = time.perf_counter()
    argv = [str(work / "official_driver.py"), "cls", args.dataset, str(ref), str(gen), str(out_dir)]
    (work / "official_driver.py").write_text(DRIVER)
    run_official(args.official_python, args.official_code, argv, work / "official_cls.log")
    official = json.loads((out_dir / "cls_high.json").read_text())
    official_s = time.perf_counter() - start
    vectors = [high_level_vector(features_from_file(p, geometry)) for p in (ref, gen)]
    official_vectors = [np.load(out_dir / f"official_vector_{k}.npy") for k in ("ref", "gen")]
    same_vector = all(np.array_equal(a, b) for a, b in zip(vectors, official_vectors, strict=True))
    start = time.perf_counter()
    ours = run_classifier("cls-high", *vectors, ClassifierSettings.official(num_threads=args.threads))
    calogen_s = time.perf_counter() - start
    print(f"\nofficial vectors identical to calogen's (bit for bit): {same_vector}")
    print(f"cls-high AUC: official {official['auc']:.4f} (best epoch {official['best_epoch']}), "
          f"calogen official settings {ours.auc_mean:.4f} (best epoch {ours.best_epochs[0]})")  # fmt: skip
    print(f"time: official {official_s:.1f} s, calogen {calogen_s:.1f} s")
    return {"official": official, "calogen_auc": ours.auc_mean, "same_vector": same_vector,
            "seconds": {"official": official_s, "calogen": calogen_s}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-code", type=Path, required=True, help="the official code/ folder")
    parser.add_argument("--official-python", required=True, help="python of an environment for the official code")
    parser.add_argument("--dataset", choices=sorted(GEOMETRY), required=True, help="official dataset name")
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--generated", type=Path, required=True)
    parser.add_argument("--n", type=int, default=None, help="use the first N showers of each file (default: all)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: hist, fpd")
    parser.add_argument("--cls-high", action="store_true", help="also train both high-level classifiers (slow)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of calogen's classifier")
    parser.add_argument("--work", type=Path, default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=None, help="write the comparison as JSON")
    args = parser.parse_args()
    geometry = Geometry.builtin(GEOMETRY[args.dataset])
    work = args.work or Path(tempfile.mkdtemp(prefix="check-official-"))
    work.mkdir(parents=True, exist_ok=True)
    ref, gen = work / "reference.h5", work / "generated.h5"
    n = [subset(src, dst, geometry, args.n) for src, dst in ((args.reference, ref), (args.generated, gen))]
    print(f"{args.generated.name} vs {args.reference.name}: {n[1]} vs {n[0]} showers, dataset {args.dataset}, work {work}")
    result: dict = {"dataset": args.dataset, "reference": str(args.reference), "generated": str(args.generated), "n": n}
    skip = set(args.skip.split(","))
    if "hist" not in skip:
        result["histograms"] = compare_histograms(args, work, ref, gen, geometry)
    if "fpd" not in skip:
        result["distances"] = compare_distances(args, work, ref, gen, geometry)
    if args.cls_high:
        result["cls_high"] = compare_cls_high(args, work, ref, gen, geometry)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
