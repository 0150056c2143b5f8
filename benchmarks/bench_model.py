"""Generation speed (and, with a reference file, quality) of a trained model or an untrained preset.

Prints milliseconds per shower at NFE 1..32 on this machine. With ``--reference REF.h5`` and the
evaluation suite installed (``calogen.eval``), also prints quality figures of the generated showers.

Usage:
    python benchmarks/bench_model.py --model runs/ds2-small --batch 1000 --threads 1
    python benchmarks/bench_model.py --preset cpu-small --geometry ds2 --nfe 1 2 4
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _untrained(preset_name: str, geometry_name: str, directory: Path):  # type: ignore[no-untyped-def]
    """An untrained model of ``preset`` on ``geometry`` (same cost as a trained one)."""
    from calogen.geometry import Geometry
    from calogen.models import load
    from calogen.models.generator import save_model
    from calogen.models.pair import ModelPair
    from calogen.models.preprocess import Preprocessor
    from calogen.train.config import Preset

    geometry, preset = Geometry.resolve(geometry_name), Preset.resolve(preset_name)
    rng = np.random.default_rng(0)
    energies = np.exp(rng.uniform(np.log(1e3), np.log(1e5), (64, 1)))
    showers = rng.exponential(1.0, (64, geometry.n_voxels)) * energies / geometry.n_voxels
    pre = Preprocessor.fit(geometry, energies, showers)
    pair = ModelPair(geometry, preset.model, pre.layer_dim)
    save_model(directory, geometry=geometry, config=preset.model, preprocessor=pre, raw=pair, ema=copy.deepcopy(pair))
    return load(directory)


def _quality(model, reference: Path, nfe: int, sampler: str, n: int) -> str:  # type: ignore[no-untyped-def]
    """FPD, KPD (high-level features, scaled by the reference) and mean E_dep/E_inc, if calogen.eval exists."""
    try:
        from calogen.eval.distances import fpd, kpd
        from calogen.features import compute_features, high_level_vector
    except ImportError:
        return "(calogen.eval not available)"
    from calogen.io import ShowerFile

    with ShowerFile(reference, model.geometry) as f:
        ref = f.read(0, n)
    gen = model.sample(ref.energies[:, 0], seed=1, nfe=nfe, sampler=sampler)
    f_ref = compute_features(ref.energies, ref.showers, model.geometry)
    f_gen = compute_features(ref.energies, gen, model.geometry)
    x_ref, x_gen = high_level_vector(f_ref), high_level_vector(f_gen)
    f_val, f_err = fpd(x_ref, x_gen, scaled=True)
    k_val, k_err = kpd(x_ref, x_gen, scaled=True, batch_size=min(5000, len(x_ref)))
    ratio_ref = float(np.mean(f_ref.e_total / f_ref.e_inc))
    ratio_gen = float(np.mean(f_gen.e_total / f_gen.e_inc))
    return f"fpd={f_val:.4f}+-{f_err:.4f} kpd={k_val:.5f}+-{k_err:.5f} Edep/Einc ref={ratio_ref:.4f} gen={ratio_gen:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="trained model directory")
    source.add_argument("--preset", help="time an untrained model of this preset")
    parser.add_argument("--geometry", default="ds2", help="geometry for --preset (default: ds2)")
    parser.add_argument("--nfe", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reference", type=Path, help="reference showers for quality columns")
    parser.add_argument("--quality-n", type=int, default=5000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(args, Path(tmp))
        energies = np.exp(np.random.default_rng(0).uniform(np.log(1e3), np.log(1e5), args.batch))
        energies = np.clip(energies, model.preprocessor.e_min, model.preprocessor.e_max)
        params = sum(p.numel() for p in model.pair.parameters())
        print(f"# {model.geometry.name}, {params} parameters, batch {args.batch}, {args.threads} thread(s), sampler {args.sampler}")
        print("nfe  ms/shower  quality")
        for nfe in args.nfe:
            model.sample(energies[:8], seed=0, nfe=nfe, sampler=args.sampler)  # warm-up
            t0 = time.perf_counter()
            model.sample(energies, seed=0, nfe=nfe, sampler=args.sampler, batch_size=args.batch)
            ms = 1e3 * (time.perf_counter() - t0) / args.batch
            quality = _quality(model, args.reference, nfe, args.sampler, args.quality_n) if args.reference else ""
            print(f"{nfe:>3}  {ms:9.3f}  {quality}", flush=True)


def load_model(args: argparse.Namespace, tmp: Path):  # type: ignore[no-untyped-def]
    """The model to time: a trained directory or an untrained preset."""
    if args.model is not None:
        from calogen.models import load

        return load(args.model)
    return _untrained(args.preset, args.geometry, tmp)


if __name__ == "__main__":
    main()
