"""A trained model as a :class:`~calogen.generator.Generator`, and the model directory format.

Generation runs in stages: the energy model samples the standardised layer-energy vector given the
scaled incident energy; the radial model, if there is one, samples how each layer's energy splits over
its radial bins given both; the shape model samples standardised voxels given the energy and the layer
vector. The voxels are mapped back to MeV, clipped at zero, cut at the geometry's threshold and rescaled
per layer (or per ring, with a radial model or ``energy_groups: rings``) so every group sums exactly to
its generated energy (:func:`~calogen.models.rescale.cut_and_rescale`, which also says what happens to
energies below the threshold). :class:`Pipeline` is that whole computation as one ``nn.Module`` with an
unrolled sampler and explicit noise inputs — the module that ONNX export traces.

A model directory holds ``config.json`` (format, geometry, model and training configuration),
``weights.safetensors`` (``ema.*`` and ``raw.*`` parameters), ``preprocessing.json`` +
``preprocessing.safetensors`` and ``history.jsonl``, and optionally the occupancy stage
(``occupancy.json`` + ``occupancy.safetensors``, :mod:`calogen.models.occupancy`), which then replaces the
threshold cut: hits per ring are drawn and placed on the largest voxels. Nothing in it is code. :func:`load` checks
everything before it allocates or runs anything: the structure and types of ``config.json``, the model
size against ``max_parameters`` (counted without allocating), the preprocessing statistics and that every
weight is finite; :meth:`FlowModel.sample` refuses to return showers computed from non-finite values.

Example:
    >>> model = load("runs/tiny")                                        # doctest: +SKIP
    >>> showers = model.sample(np.full(10, 5e3), seed=1, nfe=4)          # doctest: +SKIP
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calogen.errors import CalogenError
from calogen.generator import derive_seed
from calogen.geometry import Geometry
from calogen.models.config import ModelConfig, check_sampler_objective
from calogen.models.directory import (
    FORMAT, VERSION, ModelError, check_preprocessing, check_weights, geometry_from_dict, geometry_to_dict, model_config_from_dict, read_config,
)  # fmt: skip
from calogen.models.occupancy import Occupancy, load_occupancy
from calogen.models.pair import MAX_PARAMETERS, ModelPair
from calogen.models.pipeline import Pipeline
from calogen.models.preprocess import Preprocessor, check_directions, same_direction
from calogen.models.samplers import steps_for_nfe

__all__ = ["EVALUATION_CHUNK", "FlowModel", "ModelError", "load", "save_model"]

EVALUATION_CHUNK = 256
"""Showers the networks see at once: every call is evaluated in consecutive chunks of this many showers
(the last one shorter), whatever ``batch_size`` is. On one CPU core the shipped cpu-small model at 4 NFE
took 9.9-10.8 ms/shower in whole batches of 1000 and 6.5-8.4 ms/shower in chunks of 128-256, whose
activations fit in cache."""

MAX_VOXELS = 10_000_000
"""Default limit on the voxels of a model's geometry (DS3 has 40,500); pass ``max_voxels`` to :func:`load`."""


# --- the model directory ------------------------------------------------------------------------
def save_model(
    directory: str | os.PathLike[str],
    *,
    geometry: Geometry,
    config: ModelConfig,
    preprocessor: Preprocessor,
    raw: ModelPair,
    ema: ModelPair,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``config.json``, ``weights.safetensors`` and the preprocessing into ``directory`` (atomically)."""
    from calogen.train.checkpoint import atomic_write_json, atomic_write_tensors

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"ema.{k}": v for k, v in ema.state_dict().items()}
    tensors.update({f"raw.{k}": v for k, v in raw.state_dict().items()})
    atomic_write_tensors(directory / "weights.safetensors", tensors)
    preprocessor.save(directory)
    meta = {
        "format": FORMAT, "version": VERSION, "geometry": geometry_to_dict(geometry), "model": asdict(config),
        "layer_dim": preprocessor.layer_dim, **(extra or {}),
    }  # fmt: skip
    atomic_write_json(directory / "config.json", meta)


def load(
    path: str | os.PathLike[str], *, weights: str = "ema", max_parameters: int | None = MAX_PARAMETERS, max_voxels: int | None = MAX_VOXELS
) -> FlowModel:
    """Load a model directory written by ``calogen train``, checking every file first (module docstring).

    A refiner's directory (``model.objective: refiner``) gives a :class:`~calogen.hybrid.HybridGenerator`
    (its FastSim engine + the refiner), which is a Generator with the same ``sample``, ``using`` and
    ``config`` as a :class:`FlowModel`.

    Args:
        path: the model directory.
        weights: ``ema`` (default) or ``raw`` parameters.
        max_parameters: refuse a model with more parameters (None: no limit).
        max_voxels: refuse a geometry with more voxels (None: no limit).

    Raises:
        ModelError: the directory is missing, damaged, too large or written by another version.
    """
    from safetensors import safe_open

    directory = Path(path)
    if weights not in ("ema", "raw"):
        raise ModelError(f"weights must be 'ema' or 'raw', got {weights!r}")
    meta = read_config(directory)
    try:
        geometry = geometry_from_dict(meta["geometry"], max_voxels=max_voxels)
        config = model_config_from_dict(meta["model"])
    except ModelError as exc:
        raise ModelError(f"{directory}: {exc}") from None
    preprocessor = Preprocessor.load(directory)
    check_preprocessing(directory, preprocessor, geometry, config, meta["layer_dim"])
    pair = ModelPair(geometry, config, meta["layer_dim"], max_parameters=max_parameters)
    prefix = f"{weights}."
    try:
        with safe_open(str(directory / "weights.safetensors"), framework="pt") as f:
            state = {k[len(prefix) :]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # OSError, or safetensors' own error for a damaged file
        raise ModelError(f"{directory}/weights.safetensors cannot be read ({exc}); copy it again or retrain") from None
    try:
        pair.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{directory}: weights do not match config.json ({str(exc).splitlines()[0]})") from None
    check_weights(directory, state)
    pair.eval().requires_grad_(False)
    occupancy = load_occupancy(directory, geometry)
    if occupancy is not None and pair.radial is None and config.energy_groups != "rings":
        raise ModelError(f"{directory}: the occupancy stage needs ring energies (a radial model or energy_groups: rings); remove occupancy.*")
    model = FlowModel(directory, geometry, config, preprocessor, pair, occupancy)
    if config.objective == "refiner":
        from calogen.hybrid import HybridGenerator

        return HybridGenerator.from_model(model, meta.get("refiner"))  # type: ignore[return-value]
    return model


class FlowModel:
    """A trained energy + shape model; a :class:`~calogen.generator.Generator`.

    Shower ``i`` of a call uses noise seeded by ``derive_seed(seed, i)``. The networks run on consecutive
    chunks of :data:`EVALUATION_CHUNK` showers (activations stay in the CPU's caches), whatever
    ``batch_size`` is, so the same energies and seed give the same bytes for every ``batch_size``. The
    bytes of one shower can still change at the float32 rounding level (relative ~1e-6) when it is
    generated in a chunk of another size (for example ``sample(e[:10])`` against the first rows of
    ``sample(e)``, or a server's merged batches): CPU convolution and matrix kernels pick their
    algorithm by batch size. Calls reuse one :class:`Pipeline` per (nfe, sampler), shared with the views of
    :meth:`using`, and the networks keep their weight-only terms in inference mode, so a call at batch 1
    pays little more than its network evaluations.

    Attributes:
        geometry: the readout.
        config: architecture.
        nfe, sampler: defaults used when :meth:`sample` is not given them.
        direction: ``(theta, phi)`` rad used when :meth:`sample` is given no directions (None: :attr:`default_direction`).
        preprocessor: fitted preprocessing (its ``e_min``, ``e_max`` give the training range).
        occupancy: the occupancy stage, or None (threshold cut).
    """

    def __init__(
        self, directory: Path, geometry: Geometry, config: ModelConfig, preprocessor: Preprocessor, pair: ModelPair,
        occupancy: Occupancy | None = None,
    ) -> None:  # fmt: skip
        self.directory, self.occupancy = directory, occupancy
        self.geometry, self.config, self.preprocessor, self.pair = geometry, config, preprocessor, pair
        self.nfe, self.sampler = config.nfe, config.sampler
        self.direction: tuple[float, float] | None = None  # set by using(direction=); None: default_direction
        self._pipelines: dict[tuple[int, str], tuple[tuple[object, ...], Pipeline]] = {}  # shared by using() views

    def using(self, *, nfe: int | None = None, sampler: str | None = None, direction: tuple[float, float] | None = None) -> FlowModel:
        """A view of this model whose default NFE, sampler and direction ``(theta, phi)`` rad are replaced (weights
        shared; None keeps one); the direction is checked as in :meth:`sample`."""
        view = copy.copy(self)
        view.nfe, view.sampler = self._solver(nfe, sampler)
        if direction is not None:
            self._directions(np.asarray(direction, dtype=np.float64), 1)
            view.direction = (float(direction[0]), float(direction[1]))
        return view

    def _solver(self, nfe: int | None, sampler: str | None) -> tuple[int, str]:
        """``(nfe, sampler)`` with None replaced by the model's, checked (the jump sampler needs an average-velocity model)."""
        nfe, sampler = self.nfe if nfe is None else nfe, self.sampler if sampler is None else sampler
        steps_for_nfe(sampler, nfe)
        check_sampler_objective(sampler, self.config.objective)
        return nfe, sampler

    def noise_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-shower shapes of the noise inputs of :meth:`export_module` (standard normal, float32)."""
        return {"noise_energy": (self._energy_noise_dim,), "noise_shape": (self.geometry.n_voxels,)}

    @property
    def _energy_noise_dim(self) -> int:
        counts = self.occupancy.noise_dim if self.occupancy is not None else 0
        return self.preprocessor.layer_dim + (self.preprocessor.radial_dim if self.pair.radial is not None else 0) + counts

    def export_module(self, nfe: int, sampler: str | None = None) -> Pipeline:
        """The generator as an ``nn.Module`` ``(energies (B, 1), noise_energy, noise_shape) -> (B, voxels)``.

        ``nfe`` and ``sampler`` (None: the model's) apply to the shape network (and pick the occupancy
        stage's spectrum settings fitted for them); the energy network uses the configured ``energy_nfe``
        and ``energy_sampler`` if set.
        """
        nfe, sampler = self._solver(nfe, sampler)
        return Pipeline(
            self.pair, self.preprocessor, self.geometry, sampler=sampler, nfe=nfe,
            energy_sampler=self.config.energy_sampler, energy_nfe=self.config.energy_nfe,
            occupancy=None if self.occupancy is None else self.occupancy.for_solver(sampler, nfe),
        ).eval()  # fmt: skip

    def _pipeline(self, nfe: int, sampler: str) -> Pipeline:
        """:meth:`export_module` ``(nfe, sampler)``, built once (building it costs ~2 ms, about a fifth of a
        shower) and again whenever a part it is built from, or any attribute of the occupancy stage (its
        settings, a patched method), has been replaced since."""
        stage = () if self.occupancy is None else tuple(vars(self.occupancy).values())
        parts = (self.pair, self.preprocessor, self.geometry, self.config, self.occupancy, *stage)
        cached = self._pipelines.get((nfe, sampler))
        if cached is None or len(cached[0]) != len(parts) or any(a is not b for a, b in zip(cached[0], parts, strict=True)):
            cached = self._pipelines[nfe, sampler] = (parts, self.export_module(nfe, sampler))
        return cached[1]

    def draw_noise(self, n: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Standard-normal noise for ``n`` showers: energy ``(n, 1 + L [+ L * R] [+ rings [+ voxels]])`` and shape ``(n, voxels)``, float32.

        Each shower's stream holds the energy, then the shape, then each part of the occupancy stage's noise (counts,
        placement) in its own draw, so a model with an occupancy stage generates the same energies, shapes and
        counts as the same model without it, or with fewer parts."""
        parts = self.occupancy.noise_parts if self.occupancy is not None else ()
        d_c = sum(parts)
        d_e, d_s = self._energy_noise_dim - d_c, self.geometry.n_voxels
        noise = torch.empty((n, d_e + d_s + d_c))
        ends = np.cumsum([d_e + d_s, *parts]).tolist()
        gen = torch.Generator()
        for i in range(n):
            gen.manual_seed(derive_seed(seed, i))  # a fresh stream: reseeding also drops any cached normal sample
            for start, end in zip([0, *ends[:-1]], ends):  # one draw per part: randn's first values depend on its size
                torch.randn(end - start, generator=gen, out=noise[i, start:end])
        out = noise.numpy()
        return np.concatenate([out[:, :d_e], out[:, d_e + d_s :]], axis=1), out[:, d_e : d_e + d_s]

    def sample_with_noise(
        self, energies: np.ndarray, noise_energy: np.ndarray, noise_shape: np.ndarray, nfe: int | None = None, *, sampler: str | None = None,
        directions: np.ndarray | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Showers ``(N, voxels)`` float32 MeV for energies ``(N,)`` MeV and given noise; same as :meth:`export_module`.
        ``directions``: as in :meth:`sample`.

        Raises:
            ModelError: the networks produced NaN or inf (damaged weights, or energies far outside the
                training range), instead of showers the threshold cut would silently turn into zeros.
        """
        e = self._energies(energies)
        d = self._directions(self.direction if directions is None else directions, e.shape[0])
        module = self._pipeline(*self._solver(nfe, sampler))
        out = np.empty((e.shape[0], self.geometry.n_voxels), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, e.shape[0], EVALUATION_CHUNK):
                sl = slice(s, s + EVALUATION_CHUNK)
                args = (torch.from_numpy(e[sl]), torch.as_tensor(noise_energy[sl]), torch.as_tensor(noise_shape[sl]))
                stages = module.stages(*(a.float() for a in args), directions=None if d is None else torch.from_numpy(d[sl]).float())
                if not all(bool(torch.isfinite(t).all()) for t in stages):
                    raise ModelError(
                        f"{self.directory}: the networks produced NaN or inf for showers {s}..{s + len(e[sl]) - 1} "
                        f"(energies {float(e[sl].min()):.4g}-{float(e[sl].max()):.4g} MeV, training range "
                        f"{self.preprocessor.e_min:.4g}-{self.preprocessor.e_max:.4g}); the weights may be damaged"
                    )
                out[sl] = module.finish(*stages, args[0].float(), args[1].float()).numpy()
        return out

    def sample(
        self, energies: np.ndarray, *, seed: int, batch_size: int | None = None, nfe: int | None = None, sampler: str | None = None,
        directions: np.ndarray | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Showers ``(N, voxels)`` float32 MeV for incident energies ``(N,)`` or ``(N, 1)`` MeV.

        ``batch_size`` is accepted for the Generator protocol and changes nothing (see the class
        docstring). Energies outside the training range give a :class:`UserWarning` (the model extrapolates).
        ``directions``: incident directions ``(theta, phi)`` in radians, one ``(2,)`` or one per shower
        ``(N, 2)``; None: :attr:`direction`, else the default direction recorded at training
        (:attr:`default_direction`). A model not conditioned on the direction refuses any other direction.
        """
        e = self._energies(energies)
        outside = int(self.preprocessor.out_of_range(e).sum())
        if outside:
            warnings.warn(
                f"{outside} of {e.shape[0]} energies lie outside the training range "
                f"[{self.preprocessor.e_min:.4g}, {self.preprocessor.e_max:.4g}] MeV; the model extrapolates",
                UserWarning,
                stacklevel=2,
            )
        noise_energy, noise_shape = self.draw_noise(e.shape[0], seed=seed)
        return self.sample_with_noise(e, noise_energy, noise_shape, nfe, sampler=sampler, directions=directions)

    @property
    def default_direction(self) -> tuple[float, float]:
        """``(theta, phi)`` in radians the model generates at when given no direction: its training direction
        if that was fixed, else normal incidence."""
        return self.preprocessor.theta, self.preprocessor.phi

    def _directions(self, directions: np.ndarray | None, n: int) -> np.ndarray | None:
        """Checked directions ``(n, 2)`` for a direction-conditioned model; None for the default (or an unconditioned model).

        Raises:
            CalogenError: out of range, or not the default direction for a model not conditioned on it.
        """
        if directions is None:
            return None
        d = check_directions(directions, n)
        if self.config.directions:
            return d
        if not same_direction(d, self.default_direction):
            theta, phi = self.default_direction
            raise CalogenError(
                f"{self.directory}: this model is not conditioned on the incident direction; it generates only at its training "
                f"direction theta {theta:.4g} rad, phi {phi:.4g} rad (train one with model.directions: true for other directions)"
            )
        return None

    def _energies(self, energies: np.ndarray) -> np.ndarray:
        e = np.asarray(energies, dtype=np.float32).reshape(-1, 1)
        if not np.isfinite(e).all() or (e <= 0).any():
            raise CalogenError("incident energies must be finite and > 0 MeV")
        return e
