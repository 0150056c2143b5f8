"""``calogen export``: a trained model as one ONNX graph, as a Triton model repository, or as a Geant4 Par04 graph.

The graph is checked against PyTorch before it appears at its destination (max relative difference
<= 1e-4 on showers spread over the model's training range); a refused export writes nothing.
``--format par04`` writes one graph with Par04's input vector and cell order
(:mod:`calogen.integrations.par04_graph`), checked against calogen's own showers permuted back.
A hybrid refiner's graph (onnx, triton) takes the FastSim showers as the input ``FASTSIM_SHOWER``; the
FastSim runs outside it (the check simulates them with the refiner's recorded engine, seed 0).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from calogen.errors import CalogenError

NAME = "export"
HELP = "export a trained model to ONNX, a Triton model repository or a Geant4 Par04 ONNX graph"

CHECK_SHOWERS = 8
"""Showers, log-spaced over the training range, on which the graph is compared with PyTorch."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``calogen export``."""
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="trained model directory")
    parser.add_argument("--format", choices=["onnx", "triton", "par04"], default="onnx", help="onnx: one .onnx file; triton: a model repository; par04: one .onnx file with Geant4 Par04's input vector and cell order")
    parser.add_argument("-o", "--out", required=True, help="output .onnx file (onnx, par04) or repository folder (triton)")
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
    from calogen.serve.export import TOLERANCE, default_direction, export_onnx, takes_directions
    from calogen.serve.protocol import DIRECTION_INPUT
    from calogen.serve.triton_repo import TritonSettings, check_model_name, write_repository

    model = load(args.model_dir)
    refiner = getattr(model, "refiner", None)
    if args.format == "par04":
        if refiner is not None:
            raise CalogenError(f"{args.model_dir} is a hybrid refiner, whose graph needs the FastSim shower as an input; use --format onnx or triton")
        return _run_par04(model, args)
    nfe = model.config.nfe if args.nfe is None else args.nfe
    sampler = args.sampler or model.sampler
    grid = np.geomspace(model.preprocessor.e_min, model.preprocessor.e_max, CHECK_SHOWERS)
    energies = None if args.no_check else grid
    if refiner is None:
        module, shapes, inputs = model.export_module(nfe, sampler), model.noise_shapes(), None
    else:
        module, shapes, inputs = refiner.export_module(nfe, sampler), refiner.noise_shapes(), _fastsim_inputs(model, grid, check=not args.no_check)
    if args.format == "onnx":
        check = export_onnx(module, shapes, args.out, check_energies=energies, inputs=inputs)
    else:
        settings = TritonSettings(
            max_batch_size=args.max_batch_size, preferred_batch_size=min(args.preferred_batch_size, args.max_batch_size),
            max_queue_delay_us=args.max_queue_delay_us, instances=args.instances, kind=args.kind,
        )  # fmt: skip
        name = check_model_name(args.name or Path(args.model_dir).resolve().name)
        params = {"geometry": model.geometry.name, "sampler": sampler, "nfe": str(nfe)}
        if refiner is not None:
            params["fastsim"] = str(model.fastsim.get("engine"))  # runs outside the graph: the client sends FASTSIM_SHOWER
        _, check = write_repository(
            module, shapes, model.geometry.n_voxels, args.out, name=name, settings=settings, parameters=params, check_energies=energies,
            inputs=inputs,
        )  # fmt: skip
    kind = "" if refiner is None else ", hybrid refiner: input FASTSIM_SHOWER, the FastSim runs outside the graph"
    if takes_directions(module):
        theta, phi = default_direction(module)
        kind += f", input {DIRECTION_INPUT} (B, 2) theta, phi rad; the model's default is ({theta:.6g}, {phi:.6g})"
    print(f"wrote {args.out} ({args.format}, {sampler} sampler, nfe={nfe}{kind})")
    if check is not None:
        print(
            f"onnxruntime vs PyTorch on {check.batch} showers: max |diff| {check.max_abs_diff:.3g} MeV, "
            f"relative {check.max_rel_diff:.3g} (limit {TOLERANCE:g})"
        )
    return 0


def _fastsim_inputs(model: Any, energies: Any, *, check: bool) -> dict[str, Any]:
    """The refiner graph's ``FASTSIM_SHOWER`` values for ``energies`` MeV: showers of the refiner's recorded
    FastSim engine (seed 0); without ``check`` (tracing only) uniform showers when no engine is recorded."""
    import numpy as np

    from calogen.serve.export import FASTSIM_INPUT

    if model.fastsim.get("engine") or check:
        showers = model.engine().sample(energies, seed=0)
    else:
        showers = np.repeat(np.asarray(energies, np.float32).reshape(-1, 1) / model.geometry.n_voxels, model.geometry.n_voxels, axis=1)
    return {FASTSIM_INPUT: np.asarray(showers, dtype=np.float32)}


def _run_par04(model, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    """``--format par04``: the graph and the Par04 macro lines that run it; returns 0."""
    from calogen.integrations.par04_graph import export_par04, latent_size
    from calogen.serve.export import TOLERANCE

    check = export_par04(model, args.out, nfe=args.nfe, sampler=args.sampler, check=not args.no_check)
    n_z, n_alpha, n_r = model.geometry.shape
    layer = model.geometry.layers[0]
    print(f"wrote {args.out} (par04, {args.sampler or model.sampler} sampler, nfe={args.nfe or model.nfe})")
    if check is not None:
        print(
            f"onnxruntime (x E, permuted back) vs calogen on {check.batch} showers: max |diff| {check.max_abs_diff:.3g} MeV, "
            f"relative {check.max_rel_diff:.3g} (limit {TOLERANCE:g})"
        )
    print("Par04 macro settings for this graph:")
    for line in (
        "/Par04/inference/setModelType VAE", f"/Par04/inference/setSizeLatentVector {latent_size(model)}",
        "/Par04/inference/setSizeConditionVector 4", f"/Par04/inference/setModelPathName {args.out}",
        f"/Par04/inference/setSizeOfRhoCells {layer.r_edges[1] - layer.r_edges[0]:g} mm",
        f"/Par04/inference/setSizeOfZCells {layer.z_range[1] - layer.z_range[0]:g} mm",
        f"/Par04/inference/setNbOfRhoCells {n_r}", f"/Par04/inference/setNbOfPhiCells {n_alpha}", f"/Par04/inference/setNbOfZCells {n_z}",
    ):  # fmt: skip
        print(f"  {line}")
    return 0
