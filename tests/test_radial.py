"""The radial model: its data (fractions per layer and radial bin), their exact round trip, the network's
weight sharing across layers, and generation that rescales voxels to the ring energies it produces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _model_data import one_thread, toy_showers  # noqa: F401

from calogen.errors import CalogenError
from calogen.geometry import Geometry
from calogen.models.config import ModelConfig
from calogen.models.pair import ModelPair
from calogen.models.pipeline import Pipeline
from calogen.models.preprocess import Preprocessor
from calogen.models.radial import RadialNet
from calogen.models.voxel_groups import energy_groups, group_sums, radial_slots, radial_used, radial_vector

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", ["tiny", "ds1-photons"])
def test_radial_vector_round_trip(name):
    geometry = Geometry.builtin(name)
    energies, showers = (a.astype(np.float64) for a in toy_showers(geometry, 48, seed=4))
    showers[0, geometry.layer_slice(geometry.nonempty_layers[1])] = 0  # an empty layer
    slots, n_r = radial_slots(geometry)
    n_layers = len(geometry.nonempty_layers)
    assert n_r == max(geometry.layers[i].n_r for i in geometry.nonempty_layers) and slots.size == energy_groups(geometry, "rings").max() + 1
    fractions, mask = radial_vector(geometry, showers)
    rings = group_sums(showers, energy_groups(geometry, "rings"))
    layers = group_sums(showers, energy_groups(geometry))
    expected = np.divide(rings, np.repeat(layers, [geometry.layers[i].n_r for i in geometry.nonempty_layers], axis=1),
                         out=np.zeros_like(rings), where=rings > 0)  # fmt: skip
    np.testing.assert_allclose(fractions[:, slots], expected, rtol=1e-12)
    assert not mask[0].reshape(n_layers, n_r)[1].any()  # the empty layer carries no data

    pre = Preprocessor.fit(geometry, energies, showers, radial=True)
    assert pre.radial_dim == n_layers * n_r
    z = pre.radial_forward(torch.tensor(fractions), torch.tensor(mask))
    assert (z[~torch.tensor(mask)] == 0).all()
    used = torch.from_numpy(radial_used(geometry))
    assert used.sum() == slots.size
    back = pre.radial_inverse(z, used).flatten(1).numpy()
    keep = mask.reshape(-1, n_layers, n_r).any(axis=2).repeat(n_r, axis=1)  # non-empty layers
    np.testing.assert_allclose(back[keep], fractions[keep], rtol=1e-5, atol=1e-9)


def test_radial_net_shares_weights_across_layers_and_keeps_showers_apart():
    torch.manual_seed(0)
    net = RadialNet(n_layers=3, n_r=4, cond_dim=5, width=16, depth=2)
    for p in net.out.parameters():  # the output layer starts at zero; give it weights to see through it
        torch.nn.init.normal_(p)
    x, t, c = torch.randn(2, 12), torch.rand(2), torch.randn(2, 5)
    out = net(x, t, c)
    x2 = x.clone()
    x2[1, 4:8] += 1.0  # change layer 1 of shower 1
    out2 = net(x2, t, c)
    torch.testing.assert_close(out2[0], out[0])  # shower 0 untouched
    torch.testing.assert_close(out2[1, :4], out[1, :4])  # other layers of shower 1 untouched
    assert not torch.allclose(out2[1, 4:8], out[1, 4:8])
    deeper = RadialNet(n_layers=30, n_r=4, cond_dim=5, width=16, depth=2)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(deeper) - count(net) == 27 * 16  # one MLP for all layers: only the layer embedding grows


def test_generation_rescales_voxels_to_the_ring_energies():
    geometry = Geometry.builtin("tiny")
    energies, showers = toy_showers(geometry, 64, seed=5)
    pre = Preprocessor.fit(geometry, energies, showers, radial=True)
    config = ModelConfig(channels=(4, 8), emb_dim=16, energy_width=16, energy_depth=1, radial_width=8, radial_depth=1)
    torch.manual_seed(0)
    pair = ModelPair(geometry, config, pre.layer_dim).eval()
    pipe = Pipeline(pair, pre, geometry, sampler="euler", nfe=2)
    n = 16
    e = torch.from_numpy(energies[:n])
    noise_energy, noise_shape = torch.randn(n, pre.layer_dim + pre.radial_dim), torch.randn(n, geometry.n_voxels)
    with torch.no_grad():
        out = pipe(e, noise_energy, noise_shape).double()
    # untrained energy and radial networks have zero output layers, so each ODE returns its starting noise
    slots, used = radial_slots(geometry)[0], torch.from_numpy(radial_used(geometry))
    layer_e = pre.layers_inverse(noise_energy[:, : pre.layer_dim].double(), e.double())
    rings = (layer_e[:, :, None] * pre.radial_inverse(noise_energy[:, pre.layer_dim :].double(), used)).flatten(1)[:, slots]
    got = torch.from_numpy(group_sums(out.numpy(), energy_groups(geometry, "rings")))
    filled = got > 0
    assert filled.float().mean() > 0.9
    torch.testing.assert_close(got[filled], rings[filled], rtol=1e-4, atol=1e-3)


def test_radial_settings_are_checked(tmp_path):
    with pytest.raises(CalogenError, match="energy_groups: layers"):
        ModelConfig(energy_groups="rings", radial_width=8)
    with pytest.raises(CalogenError, match="radial_width"):
        ModelConfig(radial_width=-1)
    geometry = Geometry.builtin("tiny")
    from calogen.train.config import PRESETS
    from calogen.train.trainer import Trainer

    energies, showers = toy_showers(geometry, 16, seed=6)
    with pytest.raises(CalogenError, match="radial=True"):
        Trainer(geometry, PRESETS["tiny"], Preprocessor.fit(geometry, energies, showers))
