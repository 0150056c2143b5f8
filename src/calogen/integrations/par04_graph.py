"""A trained model as one ONNX graph with Geant4 Par04's conventions (``calogen export --format par04``).

The graph has one input and one output, as ``Par04OnnxInference`` expects (it looks both up by position):

* ``input (B, latent + 4)`` float32: Par04's VAE-type vector (:func:`calogen.integrations.par04.vae_input`),
  ``latent`` standard-normal numbers — the model's energy noise, then its shape noise
  (``model.noise_shapes()``, in that order) — followed by ``[E / 1024 GeV, theta / 90 deg, 0, 1]``;
* ``output (B, voxels)`` float32: cell energies divided by E, in Par04's order r -> phi -> z.

Inside the graph the energy is ``input[:, latent] * 1024 GeV``; the cells are ``model.sample_with_noise(E, noise)``
permuted and divided by E, so Par04's ``output * E`` gives them back in MeV. The geometry entries are read past.
The angle entry (Par04's polar angle ``theta_p`` to the beam axis, ``input[:, latent + 1] * 90 deg``) matters
only to a model conditioned on the incident direction (``model.directions: true``): the graph turns it into
calogen's ``(theta, phi)`` relative to the layer normal (:func:`~calogen.integrations.par04.layer_direction`:
``|pi/2 - theta_p|`` and ``pi`` or ``0``) and generates at that direction, as ``sample_with_noise(...,
directions=par04_directions(theta_p))``. The graph has no way to refuse an angle: Geant4 sends ``0 <= theta_p <= pi``,
and along the beam (``theta_p`` 0 or pi, which never enters a barrel; refused by ``par04_directions``) it
generates at grazing incidence ``theta = pi/2``, outside calogen's range, an extrapolation of the model; a NaN
angle gives NaN cells. Models not conditioned on the direction read the angle past (Par04 rotates the mesh onto the
direction itself), and their graph is the same as before the angle was used.

Example:
    >>> model = calogen.load("runs/tiny")                              # doctest: +SKIP
    >>> export_par04(model, "tiny-par04.onnx", nfe=4)                  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from calogen.integrations.par04 import (
    PAR04_MAX_ANGLE_DEG, PAR04_MAX_ENERGY_MEV, from_par04_order, layer_direction, par04_directions, par04_permutation, vae_input,
)  # fmt: skip
from calogen.outputs import atomic_path
from calogen.serve.export import CHECK_THETA_MAX, DEFAULT_OPSET, TOLERANCE, ExportError, trace_to_onnx

__all__ = [
    "PAR04_INPUT", "PAR04_OUTPUT", "Par04Check", "Par04Graph", "check_angles", "check_energies", "check_par04", "export_par04", "latent_size",
]  # fmt: skip

PAR04_INPUT = "input"
PAR04_OUTPUT = "output"

CHECK_POWERS = range(1, 21)
"""The graph is checked at the energies ``1024 GeV / 2**k`` inside the model's training range (2-64 GeV for
the shipped model): exact in float32 after Par04's division by 1024 GeV."""


def check_energies(model) -> np.ndarray:  # type: ignore[no-untyped-def]
    """``1024 GeV / 2**k`` (MeV, float32) for every ``k`` in :data:`CHECK_POWERS` inside the model's training range."""
    e = PAR04_MAX_ENERGY_MEV * 2.0 ** -np.asarray(CHECK_POWERS, dtype=np.float64)
    inside = e[(e >= model.preprocessor.e_min) & (e <= model.preprocessor.e_max)]
    return (inside if inside.size else e[[0, -1]]).astype(np.float32)


def check_angles(n: int) -> np.ndarray:
    """``n`` Par04 angles (rad to the beam axis) for checking a direction-conditioned graph: ``pi/2 +- CHECK_THETA_MAX``,
    evenly, so calogen's theta runs from 0 to ``CHECK_THETA_MAX`` at phi 0 and pi."""
    return math.pi / 2 + np.linspace(-CHECK_THETA_MAX, CHECK_THETA_MAX, n)


def latent_size(model) -> int:  # type: ignore[no-untyped-def]
    """Length of the latent part of the Par04 input: energy noise plus shape noise of ``model``."""
    return int(sum(math.prod(shape) for shape in model.noise_shapes().values()))


class Par04Graph(nn.Module):
    """Creates Par04's view of a model's export module: ``(B, latent + 4) -> (B, voxels)`` cells / E, r -> phi -> z.

    Args:
        pipeline: ``model.export_module(nfe, sampler)``.
        noise_sizes: per-shower sizes of the energy and shape noise, in order.
        permutation: :func:`~calogen.integrations.par04.par04_permutation` of the model's geometry.
        directed: feed the angle entry to the pipeline as the incident direction (a direction-conditioned model).
    """

    def __init__(self, pipeline: nn.Module, noise_sizes: tuple[int, int], permutation: np.ndarray, *, directed: bool = False) -> None:
        super().__init__()
        self.pipeline, self.noise_sizes, self.directed = pipeline, noise_sizes, directed
        self.register_buffer("permutation", torch.from_numpy(np.asarray(permutation, dtype=np.int64)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d_e, d_s = self.noise_sizes
        energies = x[:, d_e + d_s : d_e + d_s + 1] * PAR04_MAX_ENERGY_MEV
        if self.directed:
            theta, phi = layer_direction(x[:, d_e + d_s + 1 : d_e + d_s + 2] * math.radians(PAR04_MAX_ANGLE_DEG))
            showers = self.pipeline(energies, x[:, :d_e], x[:, d_e : d_e + d_s], torch.cat([theta, phi], dim=1))
        else:
            showers = self.pipeline(energies, x[:, :d_e], x[:, d_e : d_e + d_s])
        return torch.index_select(showers, 1, self.permutation) / energies


def _graph(model, nfe: int | None, sampler: str | None) -> Par04Graph:  # type: ignore[no-untyped-def]
    shapes = model.noise_shapes()
    sizes = tuple(math.prod(shapes[key]) for key in ("noise_energy", "noise_shape"))
    pipeline = model.export_module(model.nfe if nfe is None else nfe, sampler)
    directed = bool(model.config.directions)
    return Par04Graph(pipeline, sizes, par04_permutation(model.geometry), directed=directed).eval()  # type: ignore[arg-type]


@dataclass(frozen=True)
class Par04Check:
    """How the exported graph compares with ``model.sample_with_noise`` (cells permuted back, times E).

    Attributes:
        batch: showers compared.
        max_abs_diff: largest ``|graph * E - calogen|`` in MeV.
        max_rel_diff: ``max_abs_diff / max |calogen|``.
    """

    batch: int
    max_abs_diff: float
    max_rel_diff: float


def check_par04(path: str | os.PathLike[str], model, *, nfe: int | None = None, sampler: str | None = None, seed: int = 0) -> Par04Check:  # type: ignore[no-untyped-def]
    """Run the graph at ``path`` in onnxruntime on Par04 input vectors and compare with calogen's own showers.

    The inputs are built as Par04 builds them (:func:`~calogen.integrations.par04.vae_input`, latent from
    ``model.draw_noise``) at :func:`check_energies`, at normal incidence (``theta_p = pi/2``) or, for a
    direction-conditioned model, at :func:`check_angles`; the output, times E and permuted back to the
    CaloChallenge order, must equal ``model.sample_with_noise`` on the same energies, noise and directions.
    """
    import onnxruntime as ort

    energies = check_energies(model)
    noise_energy, noise_shape = model.draw_noise(energies.size, seed=seed)
    directed = bool(model.config.directions)
    angles = check_angles(energies.size) if directed else 0.5 * math.pi
    x = vae_input(energies, angles, np.concatenate([noise_energy, noise_shape], axis=1))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cells = session.run([PAR04_OUTPUT], {PAR04_INPUT: x})[0]
    got = from_par04_order(cells * energies[:, None], model.geometry)
    directions = par04_directions(angles, energies.size) if directed else None
    want = model.sample_with_noise(energies, noise_energy, noise_shape, nfe, sampler=sampler, directions=directions)
    if got.shape != want.shape:
        raise ExportError(f"Par04 graph output shape {cells.shape} differs from calogen's {want.shape}")
    diff = float(np.abs(got - want).max()) if np.isfinite(got).all() else math.inf
    return Par04Check(energies.size, diff, diff / max(float(np.abs(want).max()), np.finfo(np.float32).tiny))


def export_par04(
    model, path: str | os.PathLike[str], *, nfe: int | None = None, sampler: str | None = None,  # type: ignore[no-untyped-def]
    check: bool = True, opset: int = DEFAULT_OPSET, tolerance: float = TOLERANCE,
) -> Par04Check | None:  # fmt: skip
    """Write ``model`` as a Par04 ONNX graph at ``path``, checked (:func:`check_par04`) before it appears.

    Raises:
        ExportError: the graph differs from calogen by more than ``tolerance``; nothing is written.
    """
    graph = _graph(model, nfe, sampler)
    example = torch.zeros((2, latent_size(model) + 4))
    example[:, latent_size(model)] = 10_000.0 / PAR04_MAX_ENERGY_MEV
    result = None
    with atomic_path(path) as tmp:
        trace_to_onnx(graph, (example,), tmp, [PAR04_INPUT], [PAR04_OUTPUT], opset)
        if check:
            result = check_par04(tmp, model, nfe=nfe, sampler=sampler)
            if not result.max_rel_diff <= tolerance:
                raise ExportError(
                    f"Par04 graph differs from calogen by {result.max_rel_diff:.3g} (relative) > {tolerance:g} on "
                    f"{result.batch} showers; nothing was written to {path}. Try another --sampler or --nfe"
                )
    return result
