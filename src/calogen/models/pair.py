"""The trainable networks of a model: energy, radial (optional) and shape denoisers, built from a config.

:class:`ModelPair` holds the three denoisers (the training loss of each is in :meth:`ModelPair.forward`),
makes a student a copy of its teacher, and refuses a model larger than ``max_parameters`` before anything
is allocated (:func:`parameter_count` counts on the meta device). Generation is :mod:`calogen.models.pipeline`;
the model directory and :class:`~calogen.models.generator.FlowModel` are :mod:`calogen.models.generator`.
"""

from __future__ import annotations

import torch
from torch import nn

from calogen.geometry import Geometry
from calogen.models.config import ModelConfig
from calogen.models.directory import ModelError
from calogen.models.edm import EDM
from calogen.models.energy import EnergyNet
from calogen.models.flow_matching import Denoiser, FlowMatching
from calogen.models.preprocess import DIRECTION_FEATURES
from calogen.models.radial import RadialNet
from calogen.models.students import INTERVAL_FEATURES, STUDENT_OBJECTIVES, Student, widen_from
from calogen.models.unet import ShapeNet
from calogen.models.voxel_groups import radial_slots

__all__ = ["MAX_PARAMETERS", "ModelPair", "parameter_count"]

MAX_PARAMETERS = 200_000_000
"""Default limit on the parameters of a model (0.8 GB per float32 copy; the ``ds3-base`` preset has
about 5.5 million): a larger ``config.json`` is refused before anything is allocated. Pass
``max_parameters`` to :func:`load` or :class:`ModelPair` to change it."""

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

