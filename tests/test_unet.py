"""The shape and energy networks: shapes, alpha-roll equivariance, gradients reach every parameter."""

from __future__ import annotations

import pytest
import torch
from _model_data import one_thread  # noqa: F401

from calogen.geometry import Geometry
from calogen.models.energy import EnergyNet
from calogen.models.unet import ShapeNet

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(**kw) -> ShapeNet:
    torch.manual_seed(0)
    net = ShapeNet(Geometry.builtin("tiny"), 7, channels=(4, 8), attention_levels=(0, 1), emb_dim=16, **kw).double()
    for param in net.parameters():  # the output layer starts at zero; make the test see every path
        if not param.abs().sum() > 0:
            torch.nn.init.normal_(param, std=0.1)
    return net


@pytest.mark.parametrize("compress", [None, 3])
def test_rolling_alpha_rolls_the_output(compress):
    net = _net(compress_layers=compress)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 120, generator=g, dtype=torch.float64)
    t, cond = torch.rand(3, generator=g, dtype=torch.float64), torch.randn(3, 7, generator=g, dtype=torch.float64)
    grid = x.reshape(3, 5, 6, 4)
    out = net(x, t, cond).reshape(3, 5, 6, 4)
    for shift in (1, 4):
        rolled = net(grid.roll(shift, dims=2).reshape(3, 120), t, cond).reshape(3, 5, 6, 4)
        torch.testing.assert_close(rolled, out.roll(shift, dims=2), rtol=1e-9, atol=1e-9)
    assert not torch.allclose(net(grid.roll(1, dims=3).reshape(3, 120), t, cond), out.reshape(3, 120))


def test_gradients_reach_every_parameter():
    net = _net(compress_layers=3)
    x = torch.randn(2, 120, dtype=torch.float64)
    net(x, torch.rand(2, dtype=torch.float64), torch.randn(2, 7, dtype=torch.float64)).square().sum().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_each_voxel_sees_its_own_value_through_layer_compression():
    """Layer compression alone would mix a column's 5 layers into 3; the per-voxel head keeps each one's value."""
    net = _net(compress_layers=3)
    x = torch.randn(1, 120, dtype=torch.float64, requires_grad=True)
    out = net(x, torch.rand(1, dtype=torch.float64), torch.randn(1, 7, dtype=torch.float64))
    jacobian = torch.stack([torch.autograd.grad(out[0, i], x, retain_graph=True)[0][0] for i in range(120)])
    assert torch.linalg.matrix_rank(jacobian).item() == 120  # a rank-limited map through 3 layers would give <= 72


def test_energy_net_shapes_and_gradients():
    net = EnergyNet(6, 1, width=16, depth=2)
    torch.nn.init.normal_(net.out.weight, std=0.1)
    out = net(torch.randn(4, 6), torch.rand(4), torch.rand(4, 1))
    assert out.shape == (4, 6)
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
