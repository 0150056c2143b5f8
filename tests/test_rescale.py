"""Exact rescaling to group energies: every target that a readout can hold is met, whatever the raw voxels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calogen.geometry import Geometry
from calogen.models.rescale import cut_and_rescale, group_max, group_members, group_totals, readout_targets
from calogen.models.voxel_groups import energy_groups

THRESHOLD = 0.015


def test_group_members_list_every_voxel_once():
    groups = np.random.default_rng(1).permutation(np.repeat(np.arange(7), [3, 1, 5, 2, 8, 1, 4]))  # groups of different sizes
    members = group_members(groups)
    assert members.shape[0] == groups.max() + 1
    real = members[members < groups.size]
    assert np.array_equal(np.sort(real), np.arange(groups.size))
    for g, row in enumerate(members):
        assert (groups[row[row < groups.size]] == g).all()
    values = torch.from_numpy(np.random.default_rng(0).normal(size=(2, groups.size)))
    expected = torch.zeros(2, members.shape[0], dtype=values.dtype).scatter_reduce(
        1, torch.from_numpy(groups).expand(2, -1), values, "amax", include_self=False
    )
    torch.testing.assert_close(group_max(values, torch.from_numpy(members)), expected, rtol=0, atol=0)


def test_readout_targets_keep_the_total_and_drop_what_no_voxel_can_hold():
    targets = torch.tensor([[5.0, 0.01, 3.0, 0.002], [0.01, 0.012, 0.0, 0.0], [0.004, 0.003, 0.0, 0.0]], dtype=torch.float64)
    out = readout_targets(targets, THRESHOLD)
    torch.testing.assert_close(out[:2].sum(1), targets[:2].sum(1), rtol=1e-15, atol=0)
    torch.testing.assert_close(out[0], torch.tensor([5.0, 0, 3.0, 0], dtype=torch.float64) * (8.012 / 8.0))
    assert out[1].tolist() == [0.0, 0.022, 0.0, 0.0]  # none reaches the threshold: the largest takes the total
    assert (out[2] == 0).all()  # a total below the threshold cannot be read out at all


def test_a_group_the_network_left_at_zero_follows_its_logits():
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    raw = torch.tensor([[4.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    logits = torch.tensor([[0.0, -1.0, -9.0, -20.0, -20.5, -30.0, -20.2]])
    out = cut_and_rescale(raw, torch.tensor([[10.0, 100.0]]), groups, THRESHOLD, scores=logits)
    torch.testing.assert_close(group_totals(out, groups, 2), torch.tensor([[10.0, 100.0]]))
    weights = torch.exp(4 * (logits[0, 3:] - logits[0, 3:].max()))
    torch.testing.assert_close(out[0, 3:], 100 * weights / weights.sum())  # u^4 continued into the logits
    assert out[0, 5] == 0 and out[0, 3] > out[0, 6] > out[0, 4]


def test_a_group_spread_below_the_threshold_lands_on_its_best_voxel():
    groups = torch.tensor([0, 0, 0, 0])
    raw = torch.tensor([[0.02, 0.02, 0.02, 0.0]])  # all pass the cut, but 0.03 MeV over three voxels does not
    out = cut_and_rescale(raw, torch.tensor([[0.03]]), groups, THRESHOLD, scores=torch.tensor([[1.0, 3.0, 2.0, 0.0]]))
    assert out.tolist() == [[0.0, pytest.approx(0.03), 0.0, 0.0]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_readable_target_is_met_exactly_for_random_showers(dtype):
    geometry = Geometry.builtin("ds2")
    groups_np = energy_groups(geometry, "rings")
    groups, members = torch.from_numpy(groups_np), torch.from_numpy(group_members(groups_np))
    rng = np.random.default_rng(3)
    n = 64
    n_groups = int(groups.max()) + 1
    logits = torch.from_numpy(rng.normal(-14, 5, (n, n_groups))[:, groups_np] + rng.normal(0, 1, (n, geometry.n_voxels))).to(dtype)
    raw = (torch.sigmoid(logits) - 1e-6).clamp_min(0) * 1e3  # many exact zeros, many groups entirely zero
    targets = torch.from_numpy(rng.lognormal(-1, 3, (n, n_groups)) * (rng.random((n, n_groups)) < 0.7)).to(dtype)
    out = cut_and_rescale(raw, targets, groups, THRESHOLD, scores=logits, members=members)
    assert ((out == 0) | (out >= THRESHOLD)).all()
    readable = readout_targets(targets, THRESHOLD)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(group_totals(out, groups, n_groups), readable, rtol=tol, atol=0)
    torch.testing.assert_close(out.sum(1), targets.sum(1), rtol=tol, atol=0)
    empty_raw = (group_totals(raw, groups, n_groups) == 0) & (readable > 0)
    assert empty_raw.sum() > 100  # the case that used to lose its energy is well represented
