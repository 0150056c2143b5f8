"""key4hep DDML's embedded-Python backend: ``run_inference(inputs: list[np.ndarray]) -> np.ndarray``.

DDML's ``EmbeddedPyInference`` imports a module (property ``PythonModule``) and calls its top-level
``run_inference`` (property ``EntryPoint``) with the model's input tensors, float32 arrays shaped as the
DDML model's ``prepareInput`` declared them; it expects one flat float32 array of exactly as many cells as
that model's ``convertOutput`` reads. Point ``PythonModule`` at ``calogen.integrations.ddml``.

Input: the first array holds one row per shower (a 1-D array is one shower); its first column is the
energy (GeV, as DDML's CaloDiT models send it, unless ``CALOGEN_ENERGY_UNIT=MeV``), further columns
(angles, geometry one-hot) are accepted and not used — calogen's models are not conditioned on direction.
Output: the cells of every shower in MeV, showers one after another, each in Par04's order
r -> phi -> z (``CALOGEN_OUTPUT_ORDER=par04``, the order DDML's Par04-style models read) or in
CaloChallenge order z -> alpha -> r (``calochallenge``).

Configuration comes from the environment, read once at the first call:

=============================  ===================================================================
``CALOGEN_MODEL``              model directory; else ``DDML_MODEL_PATH`` (set by DDML's ``ModelPath``
                               property); else the shipped ``cpu-small-ds2`` model
``CALOGEN_NFE``                network evaluations per shower (default: the model's)
``CALOGEN_SEED``               run seed (default 0); call ``k`` uses ``derive_seed(seed, k)``
``CALOGEN_ENERGY_UNIT``        ``GeV`` (default) or ``MeV``
``CALOGEN_OUTPUT_ORDER``       ``par04`` (default) or ``calochallenge``
``DDML_INTRA_OP_NUM_THREADS``  torch threads (set by DDML's ``IntraOpNumThreads`` property)
=============================  ===================================================================

Example:
    >>> import numpy as np
    >>> infer = make_run_inference(DDMLConfig(model="src/calogen/data/pretrained/cpu-small-ds2"))  # doctest: +SKIP
    >>> infer([np.array([50.0, 0.0, 1.57, 1, 0, 0, 0, 0], np.float32)]).shape                      # doctest: +SKIP
    (6480,)
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calogen.errors import CalogenError

__all__ = ["SHIPPED_MODEL", "DDMLConfig", "make_run_inference", "run_inference"]

SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "data" / "pretrained" / "cpu-small-ds2"
"""The model used when neither ``CALOGEN_MODEL`` nor ``DDML_MODEL_PATH`` is set."""

_UNITS = {"GeV": 1000.0, "MeV": 1.0}
_ORDERS = ("par04", "calochallenge")


@dataclass(frozen=True)
class DDMLConfig:
    """How :func:`make_run_inference` answers DDML.

    Args:
        model: model directory.
        nfe: network evaluations per shower (None: the model's).
        seed: run seed; call ``k`` draws its noise from ``derive_seed(seed, k)``.
        energy_unit: unit of the first input column, ``GeV`` or ``MeV``.
        output_order: ``par04`` (r -> phi -> z) or ``calochallenge`` (z -> alpha -> r).
        threads: torch intra-op threads (None: leave torch's setting).
    """

    model: str = str(SHIPPED_MODEL)
    nfe: int | None = None
    seed: int = 0
    energy_unit: str = "GeV"
    output_order: str = "par04"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.energy_unit not in _UNITS:
            raise CalogenError(f"CALOGEN_ENERGY_UNIT must be one of {list(_UNITS)}, got {self.energy_unit!r}")
        if self.output_order not in _ORDERS:
            raise CalogenError(f"CALOGEN_OUTPUT_ORDER must be one of {list(_ORDERS)}, got {self.output_order!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> DDMLConfig:
        """The configuration the environment variables of the module docstring describe."""
        model = env.get("CALOGEN_MODEL") or env.get("DDML_MODEL_PATH") or str(SHIPPED_MODEL)
        return cls(
            model=model, nfe=_integer(env, "CALOGEN_NFE"), seed=_integer(env, "CALOGEN_SEED") or 0,
            energy_unit=env.get("CALOGEN_ENERGY_UNIT", "GeV"), output_order=env.get("CALOGEN_OUTPUT_ORDER", "par04"),
            threads=_integer(env, "DDML_INTRA_OP_NUM_THREADS") or None,
        )  # fmt: skip


def _integer(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise CalogenError(f"{name} must be an integer, got {value!r}") from None


def make_run_inference(config: DDMLConfig) -> Callable[[list[np.ndarray]], np.ndarray]:
    """Load the model of ``config`` and return a ``run_inference(inputs) -> flat float32`` for DDML."""
    from calogen.generator import derive_seed
    from calogen.integrations.par04 import par04_permutation
    from calogen.models import load

    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    model = load(config.model)
    order = par04_permutation(model.geometry) if config.output_order == "par04" else None
    scale = _UNITS[config.energy_unit]
    calls = itertools.count()

    def infer(inputs: list[np.ndarray]) -> np.ndarray:
        if not inputs:
            raise CalogenError("DDML sent no input tensors; the first one must hold the energy in its first column")
        first = np.asarray(inputs[0], dtype=np.float64)
        energies = (first.reshape(1, -1) if first.ndim <= 1 else first.reshape(first.shape[0], -1))[:, 0] * scale
        showers = model.sample(energies, seed=derive_seed(config.seed, next(calls)), nfe=config.nfe)
        return np.ascontiguousarray(showers if order is None else showers[:, order], dtype=np.float32).reshape(-1)

    return infer


_default: Callable[[list[np.ndarray]], np.ndarray] | None = None


def run_inference(inputs: list[np.ndarray]) -> np.ndarray:
    """DDML's entry point: showers for ``inputs`` as one flat float32 array (configured from the environment)."""
    global _default
    if _default is None:
        _default = make_run_inference(DDMLConfig.from_env())
    return _default(inputs)
