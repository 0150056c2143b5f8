"""Generation as one module: the energy, radial and shape solves, then the cut and exact rescale (or the occupancy stage).

:class:`Pipeline` is the whole computation with an unrolled sampler and explicit noise inputs, the module
that :class:`~calogen.models.generator.FlowModel` runs in chunks and that ONNX export traces.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from calogen.geometry import Geometry
from calogen.models.occupancy import Occupancy
from calogen.models.pair import ModelPair
from calogen.models.preprocess import Preprocessor
from calogen.models.rescale import cut_and_rescale, group_members
from calogen.models.samplers import solve, steps_for_nfe
from calogen.models.traced_solve import TracedSolve
from calogen.models.voxel_groups import energy_groups, radial_slots, radial_used

__all__ = ["Pipeline"]


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

