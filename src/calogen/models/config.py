"""Typed model configuration: the architecture and objective of a calogen generative model.

:func:`check_fields` checks every field of a configuration dataclass against its annotation, strictly:
``bool`` is not an ``int``, a ``float`` must be finite (an ``int`` is accepted and converted), a
``tuple[int, ...]`` is a list or tuple of integers and ``X | None`` also allows None (JSON ``null``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from calogen.errors import CalogenError
from calogen.models.voxel_groups import ENERGY_GROUPS

__all__ = ["ModelConfig", "check_fields", "check_sampler_objective"]

OBJECTIVES = ("flow", "edm", "consistency", "average-velocity", "refiner")


def _conform(value: Any, hint: Any) -> tuple[bool, Any]:
    """``(ok, value converted to the annotation)`` for the annotations configuration fields use."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return True, None
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _conform(value, inner)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        items = [_conform(v, typing.get_args(hint)[0]) for v in value]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return ok, float(value) if ok else value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    return isinstance(value, hint), value


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return f"{_describe(inner)} or null"
    if typing.get_origin(hint) is tuple:
        return f"a list of {_describe(typing.get_args(hint)[0]).removeprefix('an ').removeprefix('a ')}s"
    return {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}.get(hint, str(hint))


def check_fields(config: Any, section: str) -> None:
    """Check every field of the dataclass ``config`` against its type annotation (see the module
    docstring), converting ints given for floats and lists given for tuples in place.

    Raises:
        CalogenError: naming ``section.field``, the expected type and the value.
    """
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        ok, converted = _conform(value, hints[f.name])
        if not ok:
            raise CalogenError(f"{section}.{f.name} must be {_describe(hints[f.name])}, got {value!r}")
        object.__setattr__(config, f.name, converted)


def check_sampler_objective(sampler: str, objective: str) -> None:
    """Refuse the ``jump`` sampler for a model that does not learn average velocities."""
    if sampler == "jump" and objective != "average-velocity":
        raise CalogenError(f"the jump sampler needs an average-velocity model; this one is a {objective!r} model")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and objective.

    Args:
        objective: ``flow`` (conditional flow matching), ``edm`` (EDM diffusion), or a one-step student of
            a flow-matching teacher: ``consistency`` or ``average-velocity`` (:mod:`calogen.models.students`;
            only ``average-velocity`` can use the ``jump`` sampler; its other samplers use the instantaneous velocity),
            or ``refiner``: a hybrid refiner whose shape flow starts at a FastSim shower (:mod:`calogen.models.refiner`).
        time_sampling: flow-matching training times, ``logit-normal`` or ``uniform``.
        channels: U-Net channels per level, finest first.
        attention_levels: U-Net levels with linear attention (the bottleneck always has it).
        compress_layers: layer count inside the U-Net (None: no compression).
        emb_dim: size of the U-Net condition embedding.
        energy_groups: what the energy network generates besides the total: the energy fractions of
            ``layers`` or of ``rings`` (one radial bin of one layer); voxels are rescaled to match them.
        energy_width, energy_depth: width and number of residual blocks of the energy network.
        radial_width, radial_depth: the same for the radial network, which generates how each layer's
            energy splits over its radial bins (voxels are then rescaled to those ring energies);
            ``radial_width: 0`` leaves it out (needs ``energy_groups: layers``).
        sampler, nfe: default sampler and number of shape-network evaluations for generation.
        energy_sampler, energy_nfe: sampler and evaluations of the energy and radial networks, which
            cost little (None: the same as the shape network's).
        bridge_sigma: a refiner's start is the preprocessed FastSim shower plus this much standard-normal
            noise (0: a deterministic transport of the FastSim shower); other objectives ignore it.
        cell_alpha: alpha bins of the grid a cell geometry's layers are mapped onto (0: six per ring of the
            outermost ring; :mod:`calogen.models.cell_map`); cylindrical geometries ignore it.
        directions: every network is also conditioned on the incident direction of the primary
            (:func:`~calogen.models.preprocess.direction_features`), and the shape network sees the azimuth of
            every grid cell (:class:`~calogen.models.unet.UNet` ``alpha_coordinates``).
    """

    objective: str = "flow"
    time_sampling: str = "logit-normal"
    channels: tuple[int, ...] = (16, 32)
    attention_levels: tuple[int, ...] = (1,)
    compress_layers: int | None = None
    emb_dim: int = 64
    energy_groups: str = "layers"
    energy_width: int = 128
    energy_depth: int = 3
    radial_width: int = 0
    radial_depth: int = 2
    sampler: str = "heun"
    nfe: int = 8
    energy_sampler: str | None = None
    energy_nfe: int | None = None
    bridge_sigma: float = 0.0
    cell_alpha: int = 0
    directions: bool = False

    def __post_init__(self) -> None:
        from calogen.models.samplers import SAMPLERS, steps_for_nfe

        check_fields(self, "model")
        if self.objective not in OBJECTIVES:
            raise CalogenError(f"model.objective {self.objective!r} is unknown; use one of {OBJECTIVES}")
        if self.energy_groups not in ENERGY_GROUPS:
            raise CalogenError(f"model.energy_groups {self.energy_groups!r} is unknown; use one of {ENERGY_GROUPS}")
        for name in ("emb_dim", "energy_width", "energy_depth"):
            if getattr(self, name) < 1:
                raise CalogenError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.cell_alpha < 0:
            raise CalogenError(f"model.cell_alpha must be >= 0 (0: automatic), got {self.cell_alpha}")
        if self.bridge_sigma < 0:
            raise CalogenError(f"model.bridge_sigma must be >= 0, got {self.bridge_sigma}")
        if self.radial_width < 0 or self.radial_depth < 1:
            raise CalogenError(f"model.radial_width must be >= 0 and radial_depth >= 1, got {self.radial_width}, {self.radial_depth}")
        if self.radial_width and self.energy_groups != "layers":
            raise CalogenError("model.radial_width > 0 needs model.energy_groups: layers (rings already fix the radial profile)")
        if self.time_sampling not in ("logit-normal", "uniform"):
            raise CalogenError(f"model.time_sampling {self.time_sampling!r} is unknown; use logit-normal or uniform")
        if not self.channels or any(c < 1 for c in self.channels):
            raise CalogenError(f"model.channels must be positive integers, got {self.channels}")
        if any(not 0 <= a < len(self.channels) for a in self.attention_levels):
            raise CalogenError(f"model.attention_levels {self.attention_levels} must index model.channels")
        if self.compress_layers is not None and self.compress_layers < 1:
            raise CalogenError(f"model.compress_layers must be >= 1 or null, got {self.compress_layers}")
        for key, value in (("sampler", self.sampler), ("energy_sampler", self.energy_sampler or self.sampler)):
            if value not in SAMPLERS:
                raise CalogenError(f"model.{key} {value!r} is unknown; use one of {sorted(SAMPLERS)}")
        if self.nfe < 1 or (self.energy_nfe is not None and self.energy_nfe < 1):
            raise CalogenError(f"model.nfe and model.energy_nfe must be >= 1, got {self.nfe}, {self.energy_nfe}")
        steps_for_nfe(self.sampler, self.nfe)
        steps_for_nfe(self.energy_sampler or self.sampler, self.energy_nfe or self.nfe)
        for sampler in (self.sampler, self.energy_sampler or self.sampler):
            check_sampler_objective(sampler, self.objective)
