"""Export a trained generator as one ONNX graph with a dynamic batch dimension.

The graph is the model's ``export_module(nfe, sampler)``: incident energies and standard-normal
noise in, showers out, the sampler unrolled over its ``nfe`` network evaluations and no randomness
inside. Inputs ``INCIDENT_ENERGY (B, 1)`` MeV, one ``NOISE_<KEY> (B, *shape)`` per entry of the model's
``noise_shapes()`` (in order), output ``SHOWERS (B, voxels)`` MeV; all float32. A hybrid refiner's graph
(:meth:`calogen.hybrid.Refiner.export_module`) also takes the FastSim showers to refine, ``FASTSIM_SHOWER
(B, voxels)`` MeV, between the energy and the noise (further ``inputs``); the FastSim itself runs outside
the graph. Export uses the TorchScript-based ``torch.onnx.export(..., dynamo=False)``, which needs no extra package.

The graph is written to a temporary file beside the destination, checked there (onnxruntime against
PyTorch on the same energies and noise, :func:`check_onnx`) and renamed into place only if it passes:
a refused or interrupted export leaves nothing behind.

Example:
    >>> model = calogen.models.load("runs/tiny")                       # doctest: +SKIP
    >>> export_onnx(model.export_module(4), model.noise_shapes(), "tiny.onnx")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calogen.errors import CalogenError
from calogen.outputs import atomic_path
from calogen.serve.protocol import DIRECTION_INPUT, ENERGY_INPUT, SHOWER_OUTPUT

__all__ = [
    "FASTSIM_INPUT", "ExportError", "OnnxCheck", "check_directions_grid", "check_onnx", "default_direction", "export_onnx",
    "noise_input_name", "takes_directions", "trace_to_onnx",
]  # fmt: skip

DEFAULT_OPSET = 17

FASTSIM_INPUT = "FASTSIM_SHOWER"
"""Graph input of a refiner: the FastSim showers ``(B, voxels)`` MeV it refines."""

TOLERANCE = 1e-4
"""Largest accepted relative difference (max |onnx - torch| / max |torch|) of an exported graph."""

CHECK_THETA_MAX = math.pi / 4
"""Largest polar angle (rad) of the directions on which a direction-conditioned graph is checked (:func:`check_directions_grid`)."""


class ExportError(CalogenError):
    """An exported graph disagrees with PyTorch, or cannot be written."""


def noise_input_name(key: str) -> str:
    """The graph input name of noise ``key`` (``noise_shape`` -> ``NOISE_SHAPE``)."""
    name = key.upper()
    return name if name.startswith("NOISE_") else f"NOISE_{name}"


def takes_directions(module: Any) -> bool:
    """True when ``module`` is the :class:`~calogen.models.pipeline.Pipeline` of a model conditioned on the
    incident direction: its ``forward`` then takes ``directions (B, 2)`` ``(theta, phi)`` rad after the noise."""
    from calogen.models.pipeline import Pipeline

    return isinstance(module, Pipeline) and bool(module.pair.config.directions)


def default_direction(module: Any) -> tuple[float, float]:
    """``(theta, phi)`` rad a :class:`~calogen.models.pipeline.Pipeline` generates at without a direction: the
    training direction its preprocessing records when the training showers shared one, else ``(0, 0)``."""
    return float(module.preprocessor.theta), float(module.preprocessor.phi)


def check_directions_grid(n: int) -> np.ndarray:
    """``(n, 2)`` float32 directions for checking a graph: theta evenly in ``[0, CHECK_THETA_MAX]``, phi in ``[-pi, pi]``."""
    return np.stack([np.linspace(0, CHECK_THETA_MAX, n), np.linspace(-math.pi, math.pi, n)], axis=1).astype(np.float32)


def export_onnx(
    module, noise_shapes: Mapping[str, tuple[int, ...]], path: str | os.PathLike[str], *,  # type: ignore[no-untyped-def]
    opset: int = DEFAULT_OPSET, check_energies: np.ndarray | None = None, tolerance: float = TOLERANCE,
    inputs: Mapping[str, np.ndarray] | None = None,
) -> OnnxCheck | None:  # fmt: skip
    """Trace ``module(energies (B, 1), *inputs, *noise)`` into an ONNX file at ``path``, checked before it appears.

    Args:
        module: a ``torch.nn.Module`` following the export contract (see the module docstring).
        noise_shapes: per-shower shape of every noise input, in ``forward`` order.
        path: the ``.onnx`` file to write (its directory must exist).
        opset: ONNX operator set.
        check_energies: incident energies (MeV) of the showers on which the graph is compared with
            PyTorch before it is renamed into place (None: no check).
        tolerance: largest accepted relative difference.
        inputs: further graph inputs (name -> values ``(B, *shape)`` float32) following the energy, in
            ``forward`` order, e.g. a refiner's :data:`FASTSIM_INPUT`: their first row traces the graph, and
            with ``check_energies`` they hold one row per check energy.

    A module that :func:`takes_directions` gets the last graph input :data:`DIRECTION_INPUT` ``(B, 2)``; it is
    traced at its :func:`default_direction` and checked on :func:`check_directions_grid`.

    Returns:
        The comparison, or None without ``check_energies``.

    Raises:
        ExportError: the graph differs by more than ``tolerance``; nothing is written.
    """
    import torch

    extra = dict(inputs or {})
    directed = takes_directions(module)
    names = [ENERGY_INPUT, *extra, *(noise_input_name(k) for k in noise_shapes), *([DIRECTION_INPUT] if directed else [])]
    generator = torch.Generator().manual_seed(0)
    fixed = (torch.from_numpy(np.repeat(np.asarray(v, dtype=np.float32)[:1], 2, axis=0)) for v in extra.values())
    example = (torch.full((2, 1), 1e4), *fixed, *(torch.randn((2, *shape), generator=generator) for shape in noise_shapes.values()))
    if directed:
        example = (*example, torch.tensor([default_direction(module)] * 2, dtype=torch.float32))
    check = None
    with atomic_path(path) as tmp:
        trace_to_onnx(module, example, tmp, names, [SHOWER_OUTPUT], opset)
        if check_energies is not None:
            check = check_onnx(tmp, module, noise_shapes, check_energies, inputs=extra)
            if not check.max_rel_diff <= tolerance:
                raise ExportError(
                    f"exported graph differs from PyTorch by {check.max_rel_diff:.3g} (relative) > {tolerance:g} on "
                    f"{check.batch} showers; nothing was written to {path}. Try another --sampler or --nfe"
                )
    return check


def trace_to_onnx(module: Any, example: tuple[Any, ...], path: Path, input_names: list[str], output_names: list[str], opset: int) -> None:
    """Trace ``module`` (in eval mode) on ``example`` into the ONNX file ``path``, every input and output with a
    dynamic batch dimension (TorchScript exporter; its deprecation and tracer warnings silenced)."""
    import torch

    dynamic = {name: {0: "batch"} for name in [*input_names, *output_names]}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter is deprecated, still supported
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module.eval(), example, str(path), input_names=input_names, output_names=output_names,
            dynamic_axes=dynamic, opset_version=opset, dynamo=False,
        )  # fmt: skip


@dataclass(frozen=True)
class OnnxCheck:
    """How an ONNX graph compares with PyTorch on the same inputs.

    Attributes:
        batch: showers compared.
        max_abs_diff: largest ``|onnx - torch|`` in MeV.
        max_rel_diff: ``max_abs_diff / max |torch|``.
    """

    batch: int
    max_abs_diff: float
    max_rel_diff: float


def check_onnx(
    path: str | os.PathLike[str], module, noise_shapes: Mapping[str, tuple[int, ...]], energies: np.ndarray, *,  # type: ignore[no-untyped-def]
    seed: int = 0, inputs: Mapping[str, np.ndarray] | None = None, directions: np.ndarray | None = None,
) -> OnnxCheck:  # fmt: skip
    """Run the ONNX file in onnxruntime and ``module`` in PyTorch on the same energies, further inputs, noise
    and (for a module that :func:`takes_directions`) directions.

    Args:
        path: the exported graph.
        module: the module it was exported from.
        noise_shapes: per-shower noise shapes, in ``forward`` order.
        energies: ``(B,)`` incident energies in MeV.
        seed: seed of the standard-normal noise.
        inputs: further inputs following the energy (name -> ``(B, *shape)`` values), as in :func:`export_onnx`.
        directions: ``(B, 2)`` or one ``(2,)`` ``(theta, phi)`` rad (None: :func:`check_directions_grid`); only
            for a module that takes them.
    """
    import onnxruntime as ort
    import torch

    e = np.asarray(energies, dtype=np.float32).reshape(-1, 1)
    rng = np.random.default_rng(seed)
    extra = {k: np.asarray(v, dtype=np.float32) for k, v in (inputs or {}).items()}
    if any(v.shape[0] != e.shape[0] for v in extra.values()):
        raise ExportError(f"check inputs {sorted(extra)} need one row per check energy ({e.shape[0]})")
    noise = [rng.standard_normal((e.shape[0], *shape)).astype(np.float32) for shape in noise_shapes.values()]
    names = [ENERGY_INPUT, *extra, *(noise_input_name(k) for k in noise_shapes)]
    values = [e, *extra.values(), *noise]
    if takes_directions(module):
        d = check_directions_grid(e.shape[0]) if directions is None else np.asarray(directions, dtype=np.float32)
        names.append(DIRECTION_INPUT)
        values.append(np.array(np.broadcast_to(d, (e.shape[0], 2))))  # a writable copy
    elif directions is not None:
        raise ExportError("directions given, but the module is not conditioned on the incident direction")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([SHOWER_OUTPUT], dict(zip(names, values)))[0]
    with torch.no_grad():
        want = module(*(torch.from_numpy(a) for a in values)).numpy()
    if got.shape != want.shape:
        raise ExportError(f"ONNX output shape {got.shape} differs from PyTorch's {want.shape}")
    diff = float(np.abs(got - want).max()) if np.isfinite(got).all() else math.inf
    return OnnxCheck(e.shape[0], diff, diff / max(float(np.abs(want).max()), np.finfo(np.float32).tiny))
