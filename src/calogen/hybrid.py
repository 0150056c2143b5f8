"""Hybrid fast simulation: a FastSim shower refined toward the full simulation by a trained refiner.

:class:`Refiner` is a loaded refiner model (:mod:`calogen.models.refiner`): ``refine(energies, fastsim)``
turns FastSim showers into refined ones. :class:`HybridGenerator` joins the FastSim engine the refiner was
trained on (recorded in its ``config.json`` under ``refiner.fastsim``) with the refiner, and is a
:class:`~calogen.generator.Generator` like any other: ``calogen.load`` returns one for a refiner
directory, so ``calogen generate``, ``serve``, ``bench`` and the demo take it (the FastSim runs in their
process). ``calogen export`` writes the refiner alone (:meth:`Refiner.export_module`): the FastSim shower
is a graph input and the FastSim runs outside the graph.

Randomness: ``HybridGenerator.sample(E, seed=s)`` simulates with seed ``derive_seed(s, 0)`` and refines
with ``derive_seed(s, 1)``; shower ``i`` of a refinement draws its start noise from ``derive_seed(seed, i)``,
so the same inputs and seed give the same bytes.

Example:
    >>> gen = calogen.load("runs/hybrid")                                    # doctest: +SKIP
    >>> showers = gen.sample(np.full(10, 5e3), seed=1, nfe=2)               # doctest: +SKIP
    >>> refined = gen.refiner.refine(energies, gflash_showers, seed=1)       # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from calogen.errors import CalogenError
from calogen.generator import derive_seed
from calogen.geometry import Geometry

__all__ = ["HybridGenerator", "Refiner", "fastsim_record", "load_refiner", "refine_file"]


def fastsim_record(attrs: dict[str, Any], geometry: Geometry) -> dict[str, Any]:
    """What a refiner records of its FastSim from a source file's attributes (``calogen simulate`` writes
    ``engine``, ``engine_options``, ``particle``, ``geometry``); ``engine`` is None for files from elsewhere."""
    options = attrs.get("engine_options")
    try:
        parsed = json.loads(options) if isinstance(options, str) else {}
    except ValueError:
        parsed = {}
    return {
        "engine": attrs.get("engine") if isinstance(attrs.get("engine"), str) else None,
        "options": parsed if isinstance(parsed, dict) else {},
        "particle": str(attrs.get("particle", geometry.particle)),
        "geometry": geometry.name,
    }


class Refiner:
    """A trained refiner: FastSim showers in, refined showers out (exact-rescaling pipeline).

    Args:
        model: the loaded model (``objective: refiner``), as :func:`~calogen.models.generator.load` builds it.
        record: the ``refiner`` section of its ``config.json`` (FastSim provenance, training source).
    """

    def __init__(self, model: Any, record: dict[str, Any]) -> None:
        self.model, self.record = model, record
        self.geometry: Geometry = model.geometry
        self._pipelines: dict[tuple[int, str], Any] = {}

    def check_source(self, energies: np.ndarray, showers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Energies ``(N, 1)`` and showers ``(N, voxels)`` float32, checked against the refiner's geometry.

        Raises:
            CalogenError: a wrong voxel count or row count, or energies not finite and positive.
        """
        e = np.asarray(energies, dtype=np.float32).reshape(-1, 1)
        x = np.asarray(showers, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.geometry.n_voxels:
            raise CalogenError(
                f"FastSim showers have shape {x.shape}; the refiner needs (N, {self.geometry.n_voxels}) for geometry "
                f"{self.geometry.name!r}: simulate the FastSim with that geometry"
            )
        if x.shape[0] != e.shape[0]:
            raise CalogenError(f"{x.shape[0]} FastSim showers but {e.shape[0]} incident energies")
        if not np.isfinite(e).all() or (e <= 0).any():
            raise CalogenError("incident energies must be finite and > 0 MeV")
        return e, x

    def noise_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-shower shapes of the noise inputs of :meth:`export_module` (standard normal, float32)."""
        return self.model.noise_shapes()  # type: ignore[no-any-return]

    def export_module(self, nfe: int | None = None, sampler: str | None = None) -> Any:
        """The refiner as an ``nn.Module`` ``(energies (B, 1), fastsim (B, voxels), noise_energy, noise_shape) ->
        (B, voxels)`` MeV (:class:`~calogen.models.refiner.RefinerPipeline`); None: the model's NFE or sampler."""
        from calogen.models.refiner import RefinerPipeline

        view = self.model.using(nfe=nfe, sampler=sampler)
        return RefinerPipeline(self.model.export_module(view.nfe, view.sampler)).eval()

    def _pipeline(self, nfe: int, sampler: str) -> Any:
        if (nfe, sampler) not in self._pipelines:
            self._pipelines[nfe, sampler] = self.model.export_module(nfe, sampler)
        return self._pipelines[nfe, sampler]

    def refine(self, energies: np.ndarray, fastsim: np.ndarray, *, seed: int, nfe: int | None = None, sampler: str | None = None) -> np.ndarray:
        """Refined showers ``(N, voxels)`` float32 MeV for incident energies ``(N,)`` MeV and FastSim showers
        ``(N, voxels)`` MeV of those energies; ``nfe``, ``sampler``: the shape flow's (None: the model's).

        Energies outside the training range give a :class:`UserWarning`.
        """
        import torch

        from calogen.models.generator import EVALUATION_CHUNK, ModelError

        e, x = self.check_source(energies, fastsim)
        view = self.model.using(nfe=nfe, sampler=sampler)
        pre = self.model.preprocessor
        outside = int(pre.out_of_range(e).sum())
        if outside:
            warnings.warn(f"{outside} of {e.shape[0]} energies lie outside the training range [{pre.e_min:.4g}, {pre.e_max:.4g}] MeV; "
                          "the refiner extrapolates", UserWarning, stacklevel=2)  # fmt: skip
        noise_energy, noise_shape = self.model.draw_noise(e.shape[0], seed=seed)
        module = self._pipeline(view.nfe, view.sampler)
        out = np.empty_like(x)
        with torch.inference_mode():
            for s in range(0, e.shape[0], EVALUATION_CHUNK):
                sl = slice(s, s + EVALUATION_CHUNK)
                args = [torch.from_numpy(a[sl]) for a in (e, noise_energy, noise_shape, x)]
                stages = module.stages(*args)
                if not all(bool(torch.isfinite(t).all()) for t in stages):
                    raise ModelError(f"{self.model.directory}: the refiner produced NaN or inf for showers {s}..{s + args[0].shape[0] - 1}")
                out[sl] = module.finish(*stages, args[0], args[1]).numpy()  # energies and noise: an occupancy stage's counts
        return out


class HybridGenerator:
    """FastSim engine + refiner as one :class:`~calogen.generator.Generator` (see the module docstring).

    Attributes:
        refiner: the :class:`Refiner`.
        geometry, config, preprocessor, directory, pair: the refiner model's (``pair``: its networks).
        nfe, sampler: the shape flow's defaults (see :meth:`using`).
    """

    def __init__(self, refiner: Refiner) -> None:
        self.refiner = refiner
        model = refiner.model
        self.geometry, self.config, self.preprocessor, self.directory = model.geometry, model.config, model.preprocessor, model.directory
        self.pair = model.pair
        self.nfe, self.sampler = model.nfe, model.sampler
        self._engine: list[Any] = []  # built on first use, shared by using() views

    @classmethod
    def from_model(cls, model: Any, record: Any) -> HybridGenerator:
        """The generator of a loaded refiner model and the ``refiner`` section of its ``config.json``."""
        from calogen.models.directory import ModelError

        if not isinstance(record, dict) or not isinstance(record.get("fastsim"), dict):
            raise ModelError(f"{model.directory}/config.json lacks the refiner's FastSim record ('refiner': {{'fastsim': ...}}); retrain it")
        return cls(Refiner(model, record))

    @property
    def fastsim(self) -> dict[str, Any]:
        """The FastSim the refiner was trained on: engine, options, particle, geometry."""
        return dict(self.refiner.record["fastsim"])

    def using(self, *, nfe: int | None = None, sampler: str | None = None) -> HybridGenerator:
        """A view whose default NFE and sampler are replaced (refiner and engine shared; None keeps one)."""
        checked = self.refiner.model.using(nfe=self.nfe if nfe is None else nfe, sampler=self.sampler if sampler is None else sampler)
        view = copy.copy(self)
        view.nfe, view.sampler = checked.nfe, checked.sampler
        return view

    def engine(self) -> Any:
        """The FastSim engine, built from the recorded engine name and options on first use.

        Raises:
            CalogenError: the refiner was trained on a FastSim file that does not name its engine.
        """
        if not self._engine:
            from calogen.sim.engines import engine_spec

            fast = self.fastsim
            if not fast.get("engine"):
                raise CalogenError(f"{self.directory} was trained on a FastSim file that does not record its engine; "
                                   "refine FastSim files with `calogen refine` instead")  # fmt: skip
            self._engine.append(engine_spec(fast["engine"], self.geometry, fast["particle"], **fast.get("options", {})).build())
        return self._engine[0]

    def sample(
        self, energies: np.ndarray, *, seed: int, batch_size: int | None = None, nfe: int | None = None, sampler: str | None = None
    ) -> np.ndarray:
        """Showers ``(N, voxels)`` float32 MeV: the FastSim's showers for ``energies`` MeV, refined."""
        e = np.asarray(energies, dtype=np.float32).reshape(-1)
        fast = self.engine().sample(e, seed=derive_seed(seed, 0), batch_size=batch_size)
        return self.refiner.refine(e, fast, seed=derive_seed(seed, 1), nfe=self.nfe if nfe is None else nfe,
                                   sampler=self.sampler if sampler is None else sampler)  # fmt: skip


def load_refiner(path: str | Path) -> HybridGenerator:
    """The refiner directory ``path`` as a :class:`HybridGenerator`.

    Raises:
        CalogenError: ``path`` holds a model that is not a refiner.
    """
    from calogen.models import load

    model = load(path)
    if not isinstance(model, HybridGenerator):
        raise CalogenError(f"{path} is a {model.config.objective!r} model, not a refiner; train one with `calogen train --preset hybrid-small --source FAST.h5`")
    return model


def refine_file(
    model: str | os.PathLike[str], fastsim: str | os.PathLike[str], output: str | os.PathLike[str], *, seed: int = 0,
    nfe: int | None = None, sampler: str | None = None, chunk_size: int = 10_000, progress: bool = False,
) -> int:  # fmt: skip
    """Refine every shower of the FastSim file ``fastsim`` with the refiner in ``model`` into ``output``
    (CaloChallenge HDF5, written to a temporary name and renamed when complete); returns the shower count.

    Chunk ``k`` of ``chunk_size`` showers is refined with seed ``derive_seed(seed, k)``, so the same inputs and
    seed give the same bytes.

    Raises:
        CalogenError: ``model`` is not a refiner, or ``fastsim`` has another geometry or energies outside the
            refiner's training range (by more than 5%).
    """
    from calogen.io import ShowerWriter
    from calogen.outputs import check_destination
    from calogen.train.data import check_fastsim_file

    check_destination(output)
    gen = load_refiner(model).using(nfe=nfe, sampler=sampler)
    pre = gen.preprocessor
    with check_fastsim_file(fastsim, gen.geometry, pre.e_min, pre.e_max, against=f"the refiner's training data ({gen.geometry.name})") as f:
        attrs = {"generator": "calogen-hybrid", "model": str(model), "fastsim": str(fastsim), "geometry": gen.geometry.name,
                 "seed": seed, "sampler": gen.sampler, "nfe": gen.nfe}  # fmt: skip
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=f.n_showers, unit="shower", desc="refine")
        with ShowerWriter(output, gen.geometry, attrs=attrs) as writer, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the range was checked above, within 5%
            for k, chunk in enumerate(f.iter_chunks(chunk_size)):
                refined = gen.refiner.refine(chunk.energies, chunk.showers, seed=derive_seed(seed, k), nfe=gen.nfe, sampler=gen.sampler)
                writer.append(chunk.energies, refined)
                if bar is not None:
                    bar.update(len(chunk))
        if bar is not None:
            bar.close()
        return f.n_showers
