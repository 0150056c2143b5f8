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
from torch import nn

from calogen.errors import CalogenError
from calogen.generator import derive_seed
from calogen.geometry import Geometry
from calogen.models.config import ModelConfig, check_sampler_objective
from calogen.models.directory import (
    FORMAT, VERSION, ModelError, check_preprocessing, check_weights, geometry_from_dict, geometry_to_dict, model_config_from_dict, read_config,
)  # fmt: skip
from calogen.models.edm import EDM
from calogen.models.energy import EnergyNet
from calogen.models.flow_matching import Denoiser, FlowMatching
from calogen.models.occupancy import Occupancy, load_occupancy
from calogen.models.preprocess import DIRECTION_FEATURES, Preprocessor, check_directions, energy_groups, radial_slots, radial_used
from calogen.models.radial import RadialNet
from calogen.models.rescale import cut_and_rescale, group_members
from calogen.models.samplers import solve, steps_for_nfe
from calogen.models.students import INTERVAL_FEATURES, STUDENT_OBJECTIVES, Student, widen_from
from calogen.models.traced_solve import TracedSolve
from calogen.models.unet import ShapeNet

__all__ = ["FlowModel", "ModelError", "ModelPair", "Pipeline", "load", "parameter_count", "save_model"]

EVALUATION_CHUNK = 256
"""Showers the networks see at once: every call is evaluated in consecutive chunks of this many showers
(the last one shorter), whatever ``batch_size`` is. On one CPU core the shipped cpu-small model at 4 NFE
took 9.9-10.8 ms/shower in whole batches of 1000 and 6.5-8.4 ms/shower in chunks of 128-256, whose
activations fit in cache."""

MAX_PARAMETERS = 200_000_000
"""Default limit on the parameters of a model (0.8 GB per float32 copy; the ``ds3-base`` preset has
about 5.5 million): a larger ``config.json`` is refused before anything is allocated. Pass
``max_parameters`` to :func:`load` or :class:`ModelPair` to change it."""

MAX_VOXELS = 10_000_000
"""Default limit on the voxels of a model's geometry (DS3 has 40,500); pass ``max_voxels`` to :func:`load`."""


def _wrap(net: nn.Module, config: ModelConfig, *, shape: bool = False) -> Denoiser:
    if config.objective == "refiner":  # only the shape flow starts at the FastSim shower
        from calogen.models.refiner import Bridge

        if shape:
            return Bridge(net, time_sampling=config.time_sampling, sigma=config.bridge_sigma)
        return FlowMatching(net, time_sampling=config.time_sampling)
    if config.objective == "edm":
        return EDM(net)
    if config.objective in STUDENT_OBJECTIVES:
        return STUDENT_OBJECTIVES[config.objective](net)
    return FlowMatching(net, time_sampling=config.time_sampling)


def parameter_count(geometry: Geometry, config: ModelConfig, layer_dim: int) -> int:
    """Parameters of ``ModelPair(geometry, config, layer_dim)``, counted on the meta device (nothing allocated).

    The networks' constructors build their small constant buffers on the CPU and skip random
    initialisation on the meta device: arithmetic on meta tensors runs Python decompositions whose
    first use imports ``torch._dynamo`` (2 s), and would slow every :func:`load` down.
    """
    with torch.device("meta"):
        return sum(p.numel() for p in ModelPair(geometry, config, layer_dim, max_parameters=None).parameters())


class ModelPair(nn.Module):
    """The energy, radial (optional) and shape denoisers, trained together.

    Args:
        geometry: the readout.
        config: architecture.
        layer_dim: size ``1 + L`` of the layer-energy vector.
        max_parameters: refuse (:class:`ModelError`, before allocating) a larger model; None: no limit.
    """

    def __init__(self, geometry: Geometry, config: ModelConfig, layer_dim: int, *, max_parameters: int | None = MAX_PARAMETERS) -> None:
        if max_parameters is not None and (count := parameter_count(geometry, config, layer_dim)) > max_parameters:
            raise ModelError(
                f"the model would have {count:,} parameters, more than the limit of {max_parameters:,}; "
                "reduce model.channels / widths, or raise max_parameters if this is intended"
            )
        super().__init__()
        self.config = config
        extra = INTERVAL_FEATURES if config.objective == "average-velocity" else 0  # the interval columns of the condition
        c = 1 + (DIRECTION_FEATURES if config.directions else 0)  # scaled energy [+ direction]
        self.energy = _wrap(EnergyNet(layer_dim, c + extra, width=config.energy_width, depth=config.energy_depth), config)
        self.radial: Denoiser | None = None
        if config.radial_width:
            n_r = radial_slots(geometry)[1]
            net = RadialNet(layer_dim - 1, n_r, c + layer_dim + extra, width=config.radial_width, depth=config.radial_depth, first_layer=c + 1)
            self.radial = _wrap(net, config)
        shape = ShapeNet(
            geometry, c + layer_dim + extra, channels=config.channels, attention_levels=config.attention_levels,
            compress_layers=config.compress_layers, emb_dim=config.emb_dim, cell_alpha=config.cell_alpha, alpha_coordinates=config.directions,
        )  # fmt: skip
        self.shape = _wrap(shape, config, shape=True)
        self.loop_networks = frozenset(("energy", "radial", "shape"))
        """The networks :meth:`forward` gives losses for (the others: zero)."""

    def denoisers(self) -> dict[str, Denoiser]:
        """The energy, radial (if any) and shape denoisers by name."""
        return {name: d for name, d in (("energy", self.energy), ("radial", self.radial), ("shape", self.shape)) if d is not None}

    def start_from(self, teacher: ModelPair, *, skip: frozenset[str] = frozenset()) -> None:
        """Make this student a copy of the flow-matching ``teacher`` (:func:`~calogen.models.students.widen_from`)
        whose losses distil it (its objective's rule). Networks named in ``skip`` keep their own weights and
        no teacher: a distilled student's energy and radial networks, regressed from scratch on the
        teacher's solves (:mod:`calogen.train.one_step`).

        A refiner (``objective: refiner``) takes the teacher's weights the same way and learns from data alone.

        Raises:
            ModelError: this is not a student or refiner, the teacher is not a flow-matching model, or their networks differ.
        """
        if self.config.objective not in (*STUDENT_OBJECTIVES, "refiner") or teacher.config.objective != "flow":
            raise ModelError(f"a {self.config.objective!r} model cannot distil a {teacher.config.objective!r} teacher; "
                             f"students ({', '.join(STUDENT_OBJECTIVES)}) learn from flow-matching models")  # fmt: skip
        mine, theirs = self.denoisers(), teacher.denoisers()
        if set(mine) != set(theirs):
            raise ModelError(f"the student has the networks {sorted(mine)}, the teacher {sorted(theirs)}")
        for name, student in mine.items():
            if name in skip:
                continue
            try:
                widen_from(student.net, theirs[name].net)
            except ValueError as exc:
                raise ModelError(f"the {name} network does not match the teacher's: {exc}") from None
            if isinstance(student, Student):  # always, given the objective checked above
                student.set_teacher(theirs[name])

    def forward(
        self,
        cond: torch.Tensor,
        layers: torch.Tensor,
        radial: torch.Tensor | None,
        voxels: torch.Tensor,
        generator: torch.Generator | None = None,
        energy_batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None,
        source: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample losses of the energy, radial (zero without one) and shape models.

        Args:
            cond: scaled incident energy ``(B, 1)``, and the direction features ``(B, 1 + 3)`` for a model
                conditioned on the direction (:meth:`~calogen.models.preprocess.Preprocessor.condition`).
            layers: standardised layer vector ``(B, 1 + L)`` (the reference one: teacher forcing).
            radial: standardised radial vector ``(B, L * R)``, or None without a radial model.
            voxels: standardised voxels ``(B, voxels)``.
            generator: source of the training noise.
            energy_batch: ``(cond, layers, radial)`` of a separate, usually larger batch for the energy
                and radial models (default: the same showers).
            source: a refiner's paired FastSim voxels ``(B, voxels)``, standardised like ``voxels``.
        """
        e_cond, e_layers, e_radial = energy_batch if energy_batch is not None else (cond, layers, radial)
        zero = torch.zeros(1, device=cond.device)
        loss_energy = self.energy.loss(e_layers, e_cond, generator) if "energy" in self.loop_networks else zero
        loss_radial = zero
        if self.radial is not None and e_radial is not None and "radial" in self.loop_networks:
            loss_radial = self.radial.loss(e_radial, torch.cat([e_cond, e_layers], dim=1), generator)
        shape_cond = torch.cat([cond, layers], dim=1)
        if source is not None:
            loss_shape = self.shape.loss(voxels, shape_cond, generator, source=source)
        else:
            loss_shape = self.shape.loss(voxels, shape_cond, generator)
        return loss_energy, loss_radial, loss_shape


class Pipeline(nn.Module):
    """The whole generator with a fixed, unrolled sampler and explicit noise.

    ``forward(energies (B, 1) MeV, noise_energy (B, 1 + L [+ L * R]), noise_shape (B, voxels)) -> (B, voxels) MeV``,
    float32, no randomness inside; traceable with a dynamic batch dimension. With a radial model the
    energy noise also holds the radial network's noise, and voxels are rescaled to ring energies. With an
    occupancy stage the energy noise ends with one value per ring for its hit count, and :meth:`finish`
    places the drawn hits instead of cutting at the threshold.
    ``forward`` is :meth:`finish` of :meth:`stages`, which expose the generated group energies. Under
    inference mode the energy and radial solves run as traces (:mod:`calogen.models.traced_solve`), bit for bit.

    Args:
        pair: the (EMA) denoisers.
        preprocessor: fitted preprocessing.
        geometry: the readout (group membership and threshold).
        sampler, nfe: the ODE solver and its number of shape-network evaluations.
        energy_sampler, energy_nfe: the same for the energy network (default: ``sampler``, ``nfe``).
        occupancy: the occupancy stage (needs ring energies: a radial model or ``energy_groups: rings``).
    """

    def __init__(
        self, pair: ModelPair, preprocessor: Preprocessor, geometry: Geometry, *, sampler: str, nfe: int,
        energy_sampler: str | None = None, energy_nfe: int | None = None, occupancy: Occupancy | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.pair, self.preprocessor, self.occupancy = pair, preprocessor, occupancy
        self.count_offset = preprocessor.layer_dim + (preprocessor.radial_dim if pair.radial is not None else 0)
        self.sampler, self.nfe = sampler, nfe
        self.energy_sampler, self.energy_nfe = energy_sampler or sampler, energy_nfe or nfe
        self.threshold = float(geometry.threshold)
        self.energy_schedule = pair.energy.schedule(steps_for_nfe(self.energy_sampler, self.energy_nfe)[0]).tolist()
        self.solve_energy = TracedSolve(pair.energy, self.energy_schedule, self.energy_sampler, self.energy_nfe)
        self.solve_radial = None if pair.radial is None else TracedSolve(pair.radial, self.energy_schedule, self.energy_sampler, self.energy_nfe)
        self.shape_schedule = pair.shape.schedule(steps_for_nfe(sampler, nfe)[0]).tolist()
        groups = energy_groups(geometry, "rings" if pair.radial is not None else pair.config.energy_groups)
        if pair.radial is not None:
            self.register_buffer("radial_slots", torch.from_numpy(radial_slots(geometry)[0]), persistent=False)
            self.register_buffer("radial_used", torch.from_numpy(radial_used(geometry)), persistent=False)
        self.register_buffer("groups", torch.from_numpy(groups.astype(np.int64)), persistent=False)
        self.register_buffer("members", torch.from_numpy(group_members(groups)), persistent=False)

    def stages(
        self, energies: torch.Tensor, noise_energy: torch.Tensor, noise_shape: torch.Tensor, source: torch.Tensor | None = None,
        directions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """Generated group energies ``(B, G)`` MeV, raw voxels ``(B, voxels)`` MeV (clipped at zero) and
        their logits ``(B, voxels)``: everything :func:`~calogen.models.rescale.cut_and_rescale` needs.
        A refiner's shape flow starts at the FastSim showers ``source (B, voxels)`` MeV instead of the noise
        (``noise_shape`` then perturbs that start, :meth:`~calogen.models.refiner.Bridge.start`). A model conditioned on
        the direction uses ``directions (B, 2)`` ``(theta, phi)`` rad (None: the preprocessing's default direction)."""
        pre = self.preprocessor
        cond = pre.condition(energies, directions, conditioned=self.pair.config.directions)
        noise_layers = noise_energy[:, : pre.layer_dim]
        layers = self.solve_energy(self.pair.energy.prior(noise_layers), cond)
        shape_cond = torch.cat([cond, layers], dim=1)
        if source is None:
            start = self.pair.shape.prior(noise_shape)
        else:
            start = self.pair.shape.start(pre.voxels_forward(source, energies), noise_shape)  # type: ignore[attr-defined]  # a Bridge
        voxels = solve(self.pair.shape, start, self.shape_schedule, cond=shape_cond,
                       sampler=self.sampler, nfe=self.nfe)  # fmt: skip
        targets = pre.layers_inverse(layers, energies)
        if self.pair.radial is not None and self.solve_radial is not None:
            noise_radial = noise_energy[:, pre.layer_dim : self.count_offset]
            radial = self.solve_radial(self.pair.radial.prior(noise_radial), shape_cond)
            rings = targets[:, :, None] * pre.radial_inverse(radial, self.radial_used)
            targets = rings.flatten(1)[:, self.radial_slots]
        logits = pre.voxels_logit(voxels)
        return targets, pre.voxels_from_logit(logits, energies), logits

    def finish(
        self, targets: torch.Tensor, raw: torch.Tensor, logits: torch.Tensor, energies: torch.Tensor | None = None,
        noise_energy: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """Showers ``(B, voxels)`` MeV from :meth:`stages`: cut at the threshold, groups rescaled exactly; with an
        occupancy stage (which needs ``energies`` and ``noise_energy``), the drawn hits of every ring instead."""
        if self.occupancy is not None and energies is not None and noise_energy is not None:
            return self.occupancy(logits, targets, energies, noise_energy[:, self.count_offset :])
        if self.occupancy is not None:
            raise ValueError("a pipeline with an occupancy stage needs energies and noise_energy in finish()")
        return cut_and_rescale(raw, targets, self.groups, self.threshold, scores=logits, members=self.members)

    def forward(
        self, energies: torch.Tensor, noise_energy: torch.Tensor, noise_shape: torch.Tensor, directions: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.finish(*self.stages(energies, noise_energy, noise_shape, directions=directions), energies, noise_energy)


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
        counts = self.occupancy.n_groups if self.occupancy is not None else 0
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
        """Standard-normal noise for ``n`` showers: energy ``(n, 1 + L [+ L * R] [+ rings])`` and shape ``(n, voxels)``, float32.

        Each shower's stream holds the energy, then the shape, then the hit-count noise, so a model with
        an occupancy stage generates the same energies and shapes as the same model without it."""
        d_c = self.occupancy.n_groups if self.occupancy is not None else 0
        d_e, d_s = self._energy_noise_dim - d_c, self.geometry.n_voxels
        noise = torch.empty((n, d_e + d_s + d_c))
        gen = torch.Generator()
        for i in range(n):
            gen.manual_seed(derive_seed(seed, i))  # a fresh stream: reseeding also drops any cached normal sample
            torch.randn(d_e + d_s, generator=gen, out=noise[i, : d_e + d_s])
            torch.randn(d_c, generator=gen, out=noise[i, d_e + d_s :])
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
        if np.abs(d - np.asarray(self.default_direction)).max(initial=0.0) > 1e-6:
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
