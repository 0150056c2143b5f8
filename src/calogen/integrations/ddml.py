"""key4hep DDML's embedded-Python backend: ``run_inference(inputs: list[np.ndarray]) -> np.ndarray``.

DDML's ``EmbeddedPyInference`` imports a module (property ``PythonModule``) and calls its top-level
``run_inference`` (property ``EntryPoint``) with the input tensors its model class prepared (float32
arrays); it expects one flat float32 array of exactly as many cells as that model class reads back.
Point ``PythonModule`` at ``calogen.integrations.ddml``. The first input holds one row per shower (a
1-D array is one shower); two layouts of it, those of DDML's cylindrical-mesh model classes, are read:

* ``vae`` (``Par04ExampleVAE``, Geant4 Par04's VAE input): ``latent`` standard-normal numbers, then
  ``[E / 1024 GeV, theta / 90 deg, 0, 1]``; the answer is every cell's energy divided by E. When the
  latent part is exactly as long as the model's noise (``latent_size(model)``: 7336 for the shipped
  DS2 model; DDML's ``LatentSize`` property), it *is* the noise, so Geant4's random engine drives the
  shower, as in the Par04 ONNX graph; otherwise the noise comes from ``CALOGEN_SEED``.
* ``calodit`` (``ParallelWorldCaloDiTModel``, CaloDiT-2's input): ``[E / GeV, phi, theta, one-hot]``;
  the answer is in MeV.

A model conditioned on the incident direction (``model.directions: true``) generates at the Par04 polar
angle of each row (``theta`` to the beam axis, turned into calogen's direction by
:func:`~calogen.integrations.par04.par04_directions`; an angle along the beam is refused); other models read
the angle past, as they read the geometry one-hot past. Cells
come in Par04's order r -> phi -> z (``CALOGEN_OUTPUT_ORDER=par04``, what both DDML classes read) or
in CaloChallenge order z -> alpha -> r (``calochallenge``), showers one after another.

Configuration comes from the environment, read at the first call:

=============================  ===================================================================
``CALOGEN_MODEL``              model directory; else ``DDML_MODEL_PATH`` (set by DDML's ``ModelPath``
                               property); else the shipped ``cpu-small-ds2-student`` model
``CALOGEN_INPUT_LAYOUT``       ``vae`` (default) or ``calodit``
``CALOGEN_OUTPUT_ORDER``       ``par04`` (default) or ``calochallenge``
``CALOGEN_NFE``                network evaluations per shower (default: the model's)
``CALOGEN_SEED``               run seed (default 0); call ``k`` uses ``derive_seed(seed, k)``
``DDML_INTRA_OP_NUM_THREADS``  torch threads (set by DDML's ``IntraOpNumThreads`` property)
=============================  ===================================================================

Example:
    >>> import numpy as np
    >>> from calogen.integrations.par04 import calodit_input
    >>> infer = make_run_inference(DDMLConfig(input_layout="calodit"))                   # doctest: +SKIP
    >>> infer([calodit_input([50_000.0], 0.0, 1.57)]).shape                              # doctest: +SKIP
    (6480,)
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calogen.errors import CalogenError
from calogen.integrations.par04 import PAR04_MAX_ANGLE_DEG, PAR04_MAX_ENERGY_MEV, VAE_CONDITION_SIZE, par04_directions, par04_permutation

__all__ = ["SHIPPED_MODEL", "DDMLConfig", "make_run_inference", "run_inference"]

SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "data" / "pretrained" / "cpu-small-ds2-student"
"""The model used when neither ``CALOGEN_MODEL`` nor ``DDML_MODEL_PATH`` is set."""

_LAYOUTS = ("vae", "calodit")
_ORDERS = ("par04", "calochallenge")


@dataclass(frozen=True)
class DDMLConfig:
    """How :func:`make_run_inference` answers DDML.

    Args:
        model: model directory.
        input_layout: ``vae`` (Par04ExampleVAE) or ``calodit`` (ParallelWorldCaloDiTModel).
        output_order: ``par04`` (r -> phi -> z) or ``calochallenge`` (z -> alpha -> r).
        nfe: network evaluations per shower (None: the model's).
        seed: run seed; call ``k`` draws its noise from ``derive_seed(seed, k)`` (unless DDML sends the noise).
        threads: torch intra-op threads (None: leave torch's setting).
    """

    model: str = str(SHIPPED_MODEL)
    input_layout: str = "vae"
    output_order: str = "par04"
    nfe: int | None = None
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.input_layout not in _LAYOUTS:
            raise CalogenError(f"CALOGEN_INPUT_LAYOUT must be one of {list(_LAYOUTS)}, got {self.input_layout!r}")
        if self.output_order not in _ORDERS:
            raise CalogenError(f"CALOGEN_OUTPUT_ORDER must be one of {list(_ORDERS)}, got {self.output_order!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> DDMLConfig:
        """The configuration the environment variables of the module docstring describe."""
        return cls(
            model=env.get("CALOGEN_MODEL") or env.get("DDML_MODEL_PATH") or str(SHIPPED_MODEL),
            input_layout=env.get("CALOGEN_INPUT_LAYOUT", "vae"), output_order=env.get("CALOGEN_OUTPUT_ORDER", "par04"),
            nfe=_integer(env, "CALOGEN_NFE"), seed=_integer(env, "CALOGEN_SEED") or 0, threads=_integer(env, "DDML_INTRA_OP_NUM_THREADS") or None,
        )  # fmt: skip


def _integer(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise CalogenError(f"{name} must be an integer, got {value!r}") from None


def _rows(inputs: list[np.ndarray], layout: str) -> np.ndarray:
    """The first input as ``(showers, entries)`` float64, checked to hold an energy where ``layout`` puts it."""
    if not inputs:
        raise CalogenError("DDML sent no input tensors; the first one must hold the shower conditions")
    first = np.asarray(inputs[0], dtype=np.float64)
    rows = first.reshape(1, -1) if first.ndim <= 1 else first.reshape(first.shape[0], -1)
    if rows.shape[1] < (VAE_CONDITION_SIZE if layout == "vae" else 3):
        raise CalogenError(f"input rows of {rows.shape[1]} numbers are too short for CALOGEN_INPUT_LAYOUT={layout}")
    return rows


def _directions(rows: np.ndarray, layout: str) -> np.ndarray:
    """calogen's incident directions ``(N, 2)`` of the rows' Par04 polar angles (``theta / 90 deg`` in ``vae``, rad in ``calodit``)."""
    theta = rows[:, 1 - VAE_CONDITION_SIZE] * math.radians(PAR04_MAX_ANGLE_DEG) if layout == "vae" else rows[:, 2]
    return par04_directions(theta, rows.shape[0])


def make_run_inference(config: DDMLConfig) -> Callable[[list[np.ndarray]], np.ndarray]:
    """Load the model of ``config`` and return a ``run_inference(inputs) -> flat float32`` for DDML."""
    from calogen.generator import derive_seed
    from calogen.models import load

    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    model = load(config.model)
    order = par04_permutation(model.geometry) if config.output_order == "par04" else None
    d_e, d_s = (math.prod(shape) for shape in model.noise_shapes().values())
    calls = itertools.count()

    directed = bool(model.config.directions)

    def showers(rows: np.ndarray, energies: np.ndarray) -> np.ndarray:
        seed = derive_seed(config.seed, next(calls))
        directions = _directions(rows, config.input_layout) if directed else None
        if config.input_layout == "vae" and rows.shape[1] == d_e + d_s + VAE_CONDITION_SIZE:  # DDML's latent is the noise
            noise_energy, noise_shape = rows[:, :d_e].astype(np.float32), rows[:, d_e : d_e + d_s].astype(np.float32)
            return model.sample_with_noise(energies, noise_energy, noise_shape, config.nfe, directions=directions)
        return model.sample(energies, seed=seed, nfe=config.nfe, directions=directions)

    def infer(inputs: list[np.ndarray]) -> np.ndarray:
        rows = _rows(inputs, config.input_layout)
        if config.input_layout == "vae":
            energies = rows[:, -VAE_CONDITION_SIZE] * PAR04_MAX_ENERGY_MEV
            cells = showers(rows, energies) / energies[:, None]
        else:
            cells = showers(rows, rows[:, 0] * 1000.0)
        return np.ascontiguousarray(cells if order is None else cells[:, order], dtype=np.float32).reshape(-1)

    return infer


_default: Callable[[list[np.ndarray]], np.ndarray] | None = None


def run_inference(inputs: list[np.ndarray]) -> np.ndarray:
    """DDML's entry point: showers for ``inputs`` as one flat float32 array (configured from the environment)."""
    global _default
    if _default is None:
        _default = make_run_inference(DDMLConfig.from_env())
    return _default(inputs)
