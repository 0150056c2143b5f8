"""What the occupancy stage is worth: hits per shower and voxel spectrum, before / oracle / learned.

For the first N showers of a reference file (held-out MC) the model generates, at each NFE, from the
reference's incident energies with one seed; the same stages (ring energies, logits) are finished
three ways:

* ``before``: the threshold cut and rescale of the model without the occupancy stage;
* ``oracle``: the occupancy stage with the reference's *true* hits per ring (only where the generated
  ring is empty or has fewer voxels does the count change), what a perfect count network is worth;
* ``learned``: the occupancy stage of the model directory (``calogen fit-occupancy``).

It prints mean hits per shower (all, and at 1, 10 and 100 GeV: the 0.1-decade windows [1, 1.26],
[8.9, 11.2] and [79, 100] GeV), hits per shower in MeV bins [t, 0.1, 0.3, 1, 3, 10, inf), the
separation power of the voxel spectrum, the largest relative error of a ring energy, and writes each
sample as a CaloChallenge file (``--out``) for ``calogen evaluate``.

    python benchmarks/bench_occupancy.py --model runs/m-occ --reference ds2_test.h5 --n 10000 --nfe 2 --out out/
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from calogen.io import ShowerFile, ShowerWriter
from calogen.models.generator import EVALUATION_CHUNK, load
from calogen.models.hit_placement import occupy
from calogen.models.occupancy import load_occupancy
from calogen.models.rescale import cut_and_rescale, group_totals, readout_targets
from calogen.train.occupancy import ring_counts, spectrum_separation

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_model_table import hits_in_windows  # noqa: E402

BINS_MEV = (0.1, 0.3, 1.0, 3.0, 10.0)


def summary(name: str, e: np.ndarray, x: np.ndarray, ref: np.ndarray, t: float) -> None:
    hits = (x >= t).sum(axis=1)
    windows = " ".join(f"{k} {v:7.1f}" for k, v in hits_in_windows(e, x, t).items())
    spectrum = np.histogram(x[x >= t], [t, *BINS_MEV, np.inf])[0] / len(x)
    print(f"{name:16s} hits {hits.mean():7.1f} | {windows} | bins {np.array2string(spectrum, precision=1, floatmode='fixed')} | "
          f"S(spectrum) {spectrum_separation(ref, x, t):.4f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model directory with occupancy.json")
    ap.add_argument("--reference", required=True, help="held-out reference showers")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--nfe", type=int, nargs="+", default=[2])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, help="write before / oracle / learned samples here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load(args.model)
    occ = load_occupancy(args.model, model.geometry)
    if occ is None:
        raise SystemExit(f"{args.model} has no occupancy stage; run calogen fit-occupancy")
    g, t = model.geometry, float(model.geometry.threshold)
    with ShowerFile(args.reference, g) as f:
        ref = f.read(0, min(args.n, f.n_showers))
    e = ref.energies.reshape(-1).astype(np.float32)
    n = len(e)
    _, true_counts = ring_counts(g, ref.showers)
    summary("reference", e, ref.showers, ref.showers, t)
    noise_energy, noise_shape = model.draw_noise(n, seed=args.seed)  # what model.sample(e, seed=args.seed) uses
    for nfe in args.nfe:
        module = model.export_module(nfe, model.sampler)
        out = {k: np.empty((n, g.n_voxels), np.float32) for k in ("before", "oracle", "learned")}
        worst, seconds = 0.0, 0.0
        with torch.inference_mode():
            for s in range(0, n, EVALUATION_CHUNK):
                sl = slice(s, s + EVALUATION_CHUNK)
                energies, noise = torch.from_numpy(e[sl, None]), torch.from_numpy(noise_energy[sl])
                stages = module.stages(energies, noise, torch.from_numpy(noise_shape[sl]))
                targets, raw, logits = stages
                out["before"][sl] = cut_and_rescale(raw, targets, module.groups, t, scores=logits, members=module.members).numpy()
                started = time.process_time()
                learned = module.finish(*stages, energies, noise)
                seconds += time.process_time() - started
                out["learned"][sl] = learned.numpy()
                tr = readout_targets(targets, t)
                k = torch.from_numpy(true_counts[sl]).float().clamp(max=occ.config.max_count)
                k = torch.minimum(k, torch.floor(tr / (t * (1 + 1e-5))))
                k = torch.where(tr > 0, torch.minimum(k.clamp_min(1), occ.sizes.float()), torch.zeros_like(k))
                floor = occ.floor_at_energies(torch.from_numpy(e[sl, None]))
                out["oracle"][sl] = occupy(logits, tr, k, occ.groups, occ.members, threshold=t, floor=floor, gamma=occ.config.gamma).numpy()
                sums = group_totals(learned.double(), occ.groups, occ.n_groups)
                worst = max(worst, float(((sums - tr.double()).abs() / tr.double().clamp_min(1e-30)).max()))
        print(f"--- NFE {nfe}, {n} showers, seed {args.seed}; occupancy stage {1e3 * seconds / n:.3f} ms/shower CPU; "
              f"largest relative ring-energy error {worst:.2e}")  # fmt: skip
        for name, x in out.items():
            summary(name, e, x, ref.showers, t)
            if args.out is not None:
                args.out.mkdir(parents=True, exist_ok=True)
                with ShowerWriter(args.out / f"{name}_nfe{nfe}.h5", g) as w:
                    w.append(e[:, None], x)


if __name__ == "__main__":
    main()
