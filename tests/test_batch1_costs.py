"""Cheaper single-shower calls keep their contracts: batch-independent kernels, derivatives, exact placement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _model_data import one_thread  # noqa: F401

from calogen.geometry import Geometry
from calogen.models.hit_placement import keep_largest
from calogen.models.occupancy import Occupancy, OccupancyConfig
from calogen.models.preprocess import Preprocessor
from calogen.models.rescale import group_members, readout_targets
from calogen.models.unet import CylindricalConv, ShapeNet, _coordinates

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = Geometry.builtin("tiny")


def _shape_net() -> ShapeNet:
    torch.manual_seed(0)
    net = ShapeNet(TINY, cond_dim=7, channels=(4, 8), attention_levels=(1,), compress_layers=3)
    with torch.no_grad():
        for param in net.parameters():  # the output layers start at zero
            param.normal_(std=0.3)
    return net


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")
@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_a_single_shower_is_convolved_as_a_row_of_a_batch(mode):
    torch.manual_seed(0)
    conv = CylindricalConv(3, 5, _coordinates((4, 6, 5)))
    x = torch.randn(4, 3, 4, 6, 5)
    with mode():
        batch = conv(x)
        rows = torch.cat([conv(x[i : i + 1]) for i in range(4)])
    assert batch.numpy().tobytes() == rows.numpy().tobytes()


@pytest.mark.parametrize("grad", [True, False])
def test_shape_network_has_tangents_and_gradients_at_batch_one(grad):
    net = _shape_net()
    g = torch.Generator().manual_seed(1)
    x, t, cond = torch.randn(1, 120, generator=g), torch.rand(1, generator=g), torch.randn(1, 7, generator=g)
    dx = torch.randn(1, 120, generator=g)
    with torch.set_grad_enabled(grad):
        out, tangent = torch.func.jvp(lambda y: net(y, t, cond), (x,), (dx,))
    with torch.no_grad():
        eps = 1e-3
        central = (net(x + eps * dx, t, cond) - net(x - eps * dx, t, cond)) / (2 * eps)
        torch.testing.assert_close(out, net(x, t, cond), rtol=1e-5, atol=1e-6)  # another kernel, without a tangent
    torch.testing.assert_close(tangent, central, rtol=2e-2, atol=2e-3)
    if grad:
        x.requires_grad_(True)
        net(x, t, cond).square().sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.unet.parameters())


def test_statistics_kept_in_inference_mode_serve_autograd_later():
    rng = np.random.default_rng(0)
    e = np.full((6, 1), 1e3)
    pre = Preprocessor.fit(TINY, e, rng.exponential(1.0, (6, TINY.n_voxels)))
    z = torch.randn(6, TINY.n_voxels)
    energies = torch.from_numpy(e).float()
    with torch.inference_mode():
        first = pre.voxels_inverse(z, energies)
    z.requires_grad_(True)
    again = pre.voxels_inverse(z, energies)  # the kept statistics are saved for the backward pass
    again.sum().backward()
    assert first.numpy().tobytes() == again.detach().numpy().tobytes()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_keep_largest_matches_a_sort_per_group():
    groups = torch.tensor([2, 0, 1, 0, 2, 2, 1, 0, 2, 3])  # groups of 3, 2, 4 and 1 voxels, interleaved
    members = torch.from_numpy(group_members(groups.numpy()))
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(5, 10, generator=g)
    sizes = torch.bincount(groups)
    counts = torch.floor(torch.rand(5, 4, generator=g) * (sizes + 1)).clamp(max=sizes.float())
    keep = keep_largest(scores, counts, groups, members)
    for b in range(5):
        for r in range(4):
            index = torch.nonzero(groups == r).flatten()
            chosen = index[scores[b, index].argsort(descending=True)[: int(counts[b, r])]]
            assert set(torch.nonzero(keep[b]).flatten().tolist()) & set(index.tolist()) == set(chosen.tolist())


def test_largest_count_is_the_last_possible_one():
    occ = Occupancy(TINY, OccupancyConfig(width=8, depth=1, max_count=3))
    g = torch.Generator().manual_seed(3)
    targets = readout_targets(torch.rand(16, occ.n_groups, generator=g) ** 3 * 20, float(TINY.threshold))
    targets[0, :3] = torch.tensor([0.0, torch.inf, torch.nan])
    possible = occ.possible(targets)
    last = (possible * torch.arange(4)).amax(dim=2).float()
    assert torch.equal(occ.largest(targets), last)
    assert (possible.sum(dim=2) >= 1).all()
