"""``calogen generate``: sample showers from a trained model directory into a CaloChallenge file.

Example:
    calogen generate runs/ds2-small --n 10000 --energy loguniform:1GeV:100GeV --nfe 4 --seed 1 -o gen.h5
    calogen generate runs/ds2-small --energies-from ds2_test.h5 --sampler heun --nfe 8 -o gen.h5
    calogen generate runs/ds2-small --n 100000 --energy 10GeV --shard-index 3 --num-shards 8 -o part-3.h5
    calogen generate runs/hgcal --n 1000 --energy 50GeV --eta 2.0 --phi 1.5708 -o gen.h5
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calogen.commands._runs import add_run_arguments, executor_of, shard_of
from calogen.commands._types import positive_int, seed_int

NAME = "generate"
HELP = "generate showers with a trained model into a CaloChallenge HDF5 file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``calogen generate``."""
    parser.add_argument("model", metavar="MODEL_DIR", help="model directory written by calogen train")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--energy", metavar="SPEC", help="incident energies: 10GeV, loguniform:1GeV:100GeV, uniform:A:B, list:A,B")
    source.add_argument("--energies-from", metavar="REF.h5", help="take the incident energies of this shower file")
    parser.add_argument("--n", type=positive_int, help="number of showers (required with --energy; default with --energies-from: all)")
    parser.add_argument("--nfe", type=positive_int, help="network evaluations per model (default: the model's)")
    parser.add_argument("--sampler", help="euler, heun, midpoint, ab2 or (average-velocity models) jump (default: the model's)")
    parser.add_argument("--batch-size", type=positive_int, default=1000, help="showers per sample() call (default: 1000); the output bytes do not depend on it: networks always run on chunks of 256 showers")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of energies and noise (default: 0)")
    parser.add_argument("--weights", choices=("ema", "raw"), default="ema", help="which weights to use (default: ema)")
    angle = parser.add_mutually_exclusive_group()
    angle.add_argument("--theta", type=float, metavar="DEG", help="polar angle of the primary to the layer normal, degrees (default: the model's direction)")
    angle.add_argument("--eta", type=float, help="pseudorapidity of the primary, instead of --theta")
    parser.add_argument("--phi", type=float, metavar="RAD", help="azimuth of the primary in radians (default 0 with --theta/--eta)")
    parser.add_argument("-o", "--output", required=True, metavar="GEN.h5", help="output file, written when complete")
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar (default: when stderr is a terminal)"
    )
    add_run_arguments(parser)


@dataclass(frozen=True)
class ModelRecipe:
    """A model directory and the settings to sample it with; workers load it themselves."""

    directory: str
    weights: str
    nfe: int
    sampler: str
    direction: tuple[float, float] | None = None

    def build(self) -> Any:
        """The loaded model, a Generator."""
        from calogen.models import load

        direction = {} if self.direction is None else {"direction": self.direction}
        return load(self.directory, weights=self.weights).using(nfe=self.nfe, sampler=self.sampler, **direction)


def _directory_sha256(directory: Path) -> str:
    """SHA-256 over the names and contents of the model directory's files."""
    from calogen.io import file_sha256

    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(directory)}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _run_identity(recipe: ModelRecipe, energies: np.ndarray, seed: int, geometry: str) -> dict[str, Any]:
    """What makes two generations the same run (their shards merge): model files, settings, energies, seed."""
    from calogen.generator import GENERATE_CHUNK
    from calogen.shards import calogen_version

    return {
        "command": "generate", "model_sha256": _directory_sha256(Path(recipe.directory)), "weights": recipe.weights,
        "nfe": recipe.nfe, "sampler": recipe.sampler, "geometry": geometry, "n": int(energies.size), "seed": seed,
        "energies_sha256": hashlib.sha256(np.asarray(energies, dtype=np.float32).tobytes()).hexdigest(),
        "chunk_size": GENERATE_CHUNK, "calogen_version": calogen_version(),
        **({} if recipe.direction is None else {"direction": list(recipe.direction)}),
    }  # fmt: skip


def _direction(args: argparse.Namespace) -> tuple[float, float] | None:
    """``(theta, phi)`` in radians from ``--theta``/``--eta`` and ``--phi``; None when neither angle is given."""
    import math

    from calogen.errors import CalogenError
    from calogen.sim.readout import theta_from_eta

    if args.theta is None and args.eta is None:
        if args.phi is not None:
            raise CalogenError("--phi needs --theta or --eta (the polar angle)")
        return None
    theta = math.radians(args.theta) if args.theta is not None else theta_from_eta(args.eta)
    return theta, 0.0 if args.phi is None else args.phi


def run(args: argparse.Namespace) -> int:
    """Generate the showers; returns 0."""
    import logging
    import warnings

    from calogen.energies import EnergySpec
    from calogen.errors import CalogenError
    from calogen.generator import generate_as_shards, generate_to_file
    from calogen.io import ShowerFile
    from calogen.models import load
    from calogen.models.samplers import steps_for_nfe
    from calogen.outputs import check_destination
    from calogen.shards import Manifest, shard_rows

    check_destination(args.output)
    shard = shard_of(args)
    model = load(args.model, weights=args.weights)
    direction = _direction(args)
    if direction is not None:
        if not hasattr(model, "default_direction"):
            raise CalogenError(f"{args.model} takes no incident direction (a hybrid refiner); leave out --theta/--eta/--phi")
        model = model.using(direction=direction)  # checks the range, and that the model can generate at it
    nfe = model.config.nfe if args.nfe is None else args.nfe
    sampler = model.config.sampler if args.sampler is None else args.sampler
    steps_for_nfe(sampler, nfe)
    if args.energy is not None:
        if args.n is None:
            raise CalogenError("--energy needs --n, the number of showers")
        energies = EnergySpec.parse(args.energy).sample(args.n, seed=args.seed)
    else:
        with ShowerFile(args.energies_from) as ref:
            energies = ref.read_energies()[:, 0]
        if energies.size == 0:
            raise CalogenError(f"{args.energies_from} holds no showers; give a file with incident energies or use --energy")
        if args.n is not None:
            if not 1 <= args.n <= energies.size:
                raise CalogenError(f"--n must lie in 1..{energies.size} (showers in {args.energies_from}), got {args.n}")
            energies = energies[: args.n]
    outside = int(model.preprocessor.out_of_range(energies).sum())
    if outside:
        pre = model.preprocessor
        logging.getLogger("calogen.generate").warning(
            "%d of %d energies lie outside the training range [%.4g, %.4g] MeV; flagged in the output attributes",
            outside, energies.size, pre.e_min, pre.e_max,
        )  # fmt: skip
    attrs = {
        "generator": "calogen-hybrid" if hasattr(model, "refiner") else "calogen-flow", "model": str(args.model), "geometry": model.geometry.name, "seed": args.seed,
        "sampler": sampler, "nfe": nfe, "weights": args.weights, "energies_out_of_training_range": outside,
    }  # fmt: skip
    if direction is not None:
        attrs.update(theta=direction[0], phi=direction[1])  # radians
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    energies = np.asarray(energies, dtype=np.float32)
    recipe = ModelRecipe(str(args.model), args.weights, nfe, sampler, direction)
    run = _run_identity(recipe, energies, args.seed, model.geometry.name)
    with warnings.catch_warnings(), executor_of(args) as executor:
        warnings.simplefilter("ignore", UserWarning)  # reported once above and stored in the file
        if shard is None and executor.kind != "serial":
            count = min(energies.size, max(executor.workers, -(-energies.size // 10_000)))
            generate_as_shards(recipe, energies, args.output, seed=args.seed, run=run, executor=executor, shards=count,
                               retries=args.retries, batch_size=args.batch_size, attrs=attrs)  # fmt: skip
        else:
            manifest = None if shard is None else Manifest.for_shard(
                "generate", run, seed=args.seed, geometry=model.geometry.name, total=energies.size, index=shard[0], count=shard[1]
            )  # fmt: skip
            generate_to_file(model.using(nfe=nfe, sampler=sampler), energies, args.output, seed=args.seed,
                             batch_size=args.batch_size, attrs=attrs, progress=progress, manifest=manifest)  # fmt: skip
    written = energies.size if shard is None else -np.subtract(*shard_rows(energies.size, *shard))
    print(f"wrote {written} showers ({model.geometry.name}, {sampler} nfe={nfe}) to {args.output}")
    return 0

