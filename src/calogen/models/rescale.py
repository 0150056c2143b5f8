"""Exact rescaling of generated voxels to generated group energies, under the readout threshold.

The energy (and radial) networks generate the energy ``T_g`` of every group ``g`` (a layer, or a ring:
one radial bin of one layer); the shape network generates raw voxels ``v_i`` (MeV, clipped at zero) and
their logits ``x_i``. :func:`cut_and_rescale` turns them into a shower whose groups sum to their
targets exactly (to float rounding) and whose every voxel is 0 or at least the threshold ``t``:

1. Targets below ``t`` cannot be read out (every recorded voxel, hence every recorded group, holds
   at least ``t``): they are set to 0 and their energy is shared among the other groups in proportion
   to their targets, so the shower keeps its generated total (:func:`readout_targets`). A shower whose
   total is below ``t`` is empty.
2. Voxels below ``t`` are cut and every group is scaled, ``v_i <- v_i T_g / sum_{j in g} v_j``.
3. A group the cut left empty is refilled before scaling, with weights that put its energy on its
   largest voxels: ``(v_i / sum_g v)^4`` while its raw sum is positive (relative to it, so nothing
   over- or underflows), else ``exp(4 (x_i - max_g x))``, the same rule in the logits (``v + a`` is
   proportional to ``exp(x)`` for small values), so a group the shape network left at exactly 0 still
   follows its azimuthal pattern. Then cut and scale again.
4. A group still empty (its energy spread over too many voxels to pass the cut) gets its whole target
   on its voxel with the largest logit.

Every step is a torch operation on whole batches, so :class:`~calogen.models.pipeline.Pipeline` and
its ONNX export contain it.

Example:
    >>> groups = torch.tensor([0, 0, 1, 1])
    >>> raw = torch.tensor([[3.0, 1.0, 0.0, 0.0]])
    >>> cut_and_rescale(raw, torch.tensor([[8.0, 2.0]]), groups, 0.5, scores=torch.tensor([[0.0, 0.0, -20.0, -30.0]]))
    tensor([[6., 2., 2., 0.]])
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["cut_and_rescale", "group_max", "group_members", "group_totals", "group_values", "readout_targets", "rescale_layers"]

RESCUE_POWER = 4
"""Power of the rescue weights (step 3): large enough to concentrate a small group energy on a few voxels."""


def group_members(groups: np.ndarray) -> np.ndarray:
    """Voxel indices ``(G, K)`` of every group (``K``: the largest group), padded with ``n_voxels``."""
    groups = np.asarray(groups, dtype=np.int64)
    n_groups = int(groups.max()) + 1
    counts = np.bincount(groups, minlength=n_groups)
    members = np.full((n_groups, int(counts.max())), groups.size, dtype=np.int64)
    order = np.argsort(groups, kind="stable")
    position = np.arange(groups.size) - np.repeat(np.cumsum(counts) - counts, counts)
    members[groups[order], position] = order
    return members


def group_totals(showers: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Sum ``(B, G)`` of ``showers (B, voxels)`` over the voxels of each group (``groups (voxels,)`` int64)."""
    index = groups.expand(showers.shape[0], -1)
    return torch.zeros(showers.shape[0], n_groups, dtype=showers.dtype, device=showers.device).scatter_add(1, index, showers)


def group_values(values: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """``(B, G, K)`` values of every group's members (-inf in the padding)."""
    pad = torch.full_like(values[:, :1], -torch.inf)
    return torch.cat([values, pad], dim=1).index_select(1, members.flatten()).view(values.shape[0], *members.shape)


def group_max(values: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """Largest value ``(B, G)`` of ``values (B, voxels)`` in each group (``members`` from :func:`group_members`)."""
    return group_values(values, members).amax(dim=2)


def rescale_layers(showers: torch.Tensor, layer_energies: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Scale each group (layer or ring) of ``showers`` so it sums to ``layer_energies``.

    ``v_i <- v_i * E_g / sum_{j in g} v_j`` for voxels ``i`` of group ``g``; a group that is all zero stays zero.

    Args:
        showers: ``(B, voxels)`` non-negative MeV.
        layer_energies: ``(B, G)`` MeV.
        groups: ``(voxels,)`` int64 group of every voxel.
    """
    sums = group_totals(showers, groups, layer_energies.shape[1])
    scale = torch.where(sums > 0, layer_energies / sums.clamp_min(torch.finfo(sums.dtype).tiny), torch.zeros_like(sums))
    return showers * scale.index_select(1, groups)


def readout_targets(targets: torch.Tensor, threshold: float) -> torch.Tensor:
    """Group energies ``(B, G)`` MeV that a readout with this threshold can hold, with the same totals.

    Targets below ``threshold`` become 0 and the others are scaled by ``sum(T) / sum(T >= threshold)``;
    if none reaches it, the largest takes the whole total, and a total below ``threshold`` gives zeros.
    """
    total = targets.sum(dim=1, keepdim=True)
    kept = torch.where(targets >= threshold, targets, torch.zeros_like(targets))
    kept_sum = kept.sum(dim=1, keepdim=True)
    largest = torch.arange(targets.shape[1], device=targets.device) == targets.argmax(dim=1, keepdim=True)
    fallback = torch.where(largest & (total >= threshold), total, torch.zeros_like(targets))
    scaled = kept * (total / kept_sum.clamp_min(torch.finfo(targets.dtype).tiny))
    return torch.where(kept_sum > 0, scaled, fallback)


def cut_and_rescale(
    raw: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor, threshold: float, *,
    scores: torch.Tensor | None = None, members: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """Showers ``(B, voxels)`` MeV from raw voxels, every group rescaled to ``targets``; see the module docstring.

    Args:
        raw: ``(B, voxels)`` non-negative MeV.
        targets: ``(B, G)`` group energies in MeV.
        groups: ``(voxels,)`` int64 group of every voxel.
        threshold: readout threshold in MeV.
        scores: ``(B, voxels)`` logits of the raw voxels, which order voxels that are all 0 (default: ``raw``).
        members: :func:`group_members` of ``groups`` (computed if not given; pass it when tracing).
    """
    if members is None:
        members = torch.from_numpy(group_members(groups.cpu().numpy())).to(groups.device)
    scores = raw if scores is None else scores
    n_groups = targets.shape[1]
    targets = readout_targets(targets, threshold)
    tiny = torch.finfo(raw.dtype).tiny
    showers = torch.where(raw >= threshold, raw, torch.zeros_like(raw))
    empty = (group_totals(showers, groups, n_groups) <= 0).index_select(1, groups)
    raw_sums = group_totals(raw, groups, n_groups).index_select(1, groups)
    by_group = group_values(scores, members)
    from_raw = (raw / raw_sums.clamp_min(tiny)) ** RESCUE_POWER
    from_scores = torch.exp(RESCUE_POWER * (scores - by_group.amax(dim=2).index_select(1, groups)))
    rescue = torch.where(raw_sums > 0, from_raw, from_scores)
    showers = rescale_layers(torch.where(empty, rescue, showers), targets, groups)
    showers = torch.where(showers >= threshold, showers, torch.zeros_like(showers))
    showers = rescale_layers(showers, targets, groups)
    lost = (group_totals(showers, groups, n_groups) <= 0) & (targets > 0)
    best = members.expand(raw.shape[0], -1, -1).gather(2, by_group.argmax(dim=2, keepdim=True))[:, :, 0]
    return showers.scatter_add(1, best, torch.where(lost, targets, torch.zeros_like(targets)))
