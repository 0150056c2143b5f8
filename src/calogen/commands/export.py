"""``calogen export``: a trained model as one ONNX graph, or as a Triton model repository.

The graph is checked against PyTorch before it appears at its destination (max relative difference
<= 1e-4 on showers spread over the model's training range); a refused export writes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "export"
HELP = "export a trained model to ONNX or to a Triton model repository"

CHECK_SHOWERS = 8
"""Showers, log-spaced over the training range, on which the graph is compared with PyTorch."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``calogen export``."""
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="trained model directory")
    parser.add_argument("--format", choices=["onnx", "triton"], default="onnx", help="onnx: one .onnx file; triton: a model repository")
    parser.add_argument("-o", "--out", required=True, help="output .onnx file (onnx) or repository folder (triton)")
    parser.add_argument("--nfe", type=int, help="network evaluations per sample baked into the graph (default: the model's)")
    parser.add_argument("--sampler", help="sampler unrolled into the graph (default: the model's)")
    parser.add_argument("--name", help="model name in the Triton repository: a plain folder name (default: the model directory's name)")
    parser.add_argument("--max-batch-size", type=int, default=256, help="Triton max_batch_size (default: 256)")
    parser.add_argument("--preferred-batch-size", type=int, default=64, help="Triton dynamic-batching preferred size (default: 64)")
    parser.add_argument("--max-queue-delay-us", type=int, default=2000, help="Triton dynamic-batching queue delay (default: 2000 us)")
    parser.add_argument("--instances", type=int, default=1, help="Triton model instances (default: 1)")
    parser.add_argument("--kind", choices=["cpu", "gpu"], default="cpu", help="Triton instance kind (default: cpu)")
    parser.add_argument("--no-check", action="store_true", help="skip comparing onnxruntime against PyTorch")


def run(args: argparse.Namespace) -> int:
    """Export (checked unless ``--no-check``); returns 0."""
    import numpy as np

    from calogen.models import load
    from calogen.serve.export import TOLERANCE, export_onnx
    from calogen.serve.triton_repo import TritonSettings, check_model_name, write_repository

    model = load(args.model_dir)
    nfe = model.config.nfe if args.nfe is None else args.nfe
    sampler = args.sampler or model.sampler
    module = model.export_module(nfe, sampler)
    shapes = model.noise_shapes()
    energies = None if args.no_check else np.geomspace(model.preprocessor.e_min, model.preprocessor.e_max, CHECK_SHOWERS)
    if args.format == "onnx":
        check = export_onnx(module, shapes, args.out, check_energies=energies)
    else:
        settings = TritonSettings(
            max_batch_size=args.max_batch_size, preferred_batch_size=min(args.preferred_batch_size, args.max_batch_size),
            max_queue_delay_us=args.max_queue_delay_us, instances=args.instances, kind=args.kind,
        )  # fmt: skip
        name = check_model_name(args.name or Path(args.model_dir).resolve().name)
        params = {"geometry": model.geometry.name, "sampler": sampler, "nfe": str(nfe)}
        _, check = write_repository(
            module, shapes, model.geometry.n_voxels, args.out, name=name, settings=settings, parameters=params, check_energies=energies
        )
    print(f"wrote {args.out} ({args.format}, {sampler} sampler, nfe={nfe})")
    if check is not None:
        print(
            f"onnxruntime vs PyTorch on {check.batch} showers: max |diff| {check.max_abs_diff:.3g} MeV, "
            f"relative {check.max_rel_diff:.3g} (limit {TOLERANCE:g})"
        )
    return 0
