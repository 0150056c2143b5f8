"""Typed model configuration: the architecture and objective of a calogen generative model."""

from __future__ import annotations

from dataclasses import dataclass

from calogen.errors import CalogenError
from calogen.models.preprocess import ENERGY_GROUPS

__all__ = ["ModelConfig"]

OBJECTIVES = ("flow", "edm")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and objective.

    Args:
        objective: ``flow`` (conditional flow matching) or ``edm`` (EDM diffusion).
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

    def __post_init__(self) -> None:
        from calogen.models.samplers import SAMPLERS

        if self.objective not in OBJECTIVES:
            raise CalogenError(f"model.objective {self.objective!r} is unknown; use one of {OBJECTIVES}")
        if self.energy_groups not in ENERGY_GROUPS:
            raise CalogenError(f"model.energy_groups {self.energy_groups!r} is unknown; use one of {ENERGY_GROUPS}")
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
