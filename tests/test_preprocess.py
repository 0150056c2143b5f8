"""Preprocessing: exact round trips, saved statistics, exact layer rescaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _model_data import toy_showers

from calogen.errors import CalogenError
from calogen.geometry import Geometry
from calogen.models.rescale import cut_and_rescale, rescale_layers
from calogen.models.preprocess import Preprocessor
from calogen.models.voxel_groups import energy_groups, group_sums, layer_vector


@pytest.fixture(scope="module")
def data():
    geometry = Geometry.builtin("tiny")
    energies, showers = toy_showers(geometry, 64, seed=3)
    return geometry, energies.astype(np.float64), showers.astype(np.float64)


def test_voxel_round_trip(data):
    geometry, energies, showers = data
    pre = Preprocessor.fit(geometry, energies, showers)
    e, v = torch.tensor(energies), torch.tensor(showers)
    z = pre.voxels_forward(v, e)
    assert abs(float(z.mean())) < 0.1 and 0.5 < float(z.std()) < 1.5
    back = pre.voxels_inverse(z, e).numpy()
    np.testing.assert_allclose(back, showers, rtol=1e-5, atol=1e-5 * energies.max())


def test_layer_round_trip_and_energy_scaling(data):
    geometry, energies, showers = data
    pre = Preprocessor.fit(geometry, energies, showers)
    vec = layer_vector(geometry, showers)
    e = torch.tensor(energies)
    layers = pre.layers_inverse(pre.layers_forward(torch.tensor(vec), e), e).numpy()
    np.testing.assert_allclose(layers, geometry.layer_energies(showers), rtol=1e-5, atol=1e-9)
    c = pre.energy_forward(e).numpy()
    assert c.min() == pytest.approx(0.0, abs=1e-12) and c.max() == pytest.approx(1.0)


def test_save_load_round_trip(data, tmp_path):
    geometry, energies, showers = data
    pre = Preprocessor.fit(geometry, energies, showers)
    pre.save(tmp_path)
    again = Preprocessor.load(tmp_path)
    assert (again.e_min, again.e_max, again.voxel_scale) == (pre.e_min, pre.e_max, pre.voxel_scale)
    np.testing.assert_array_equal(again.voxel_std, pre.voxel_std)
    (tmp_path / "preprocessing.json").unlink()
    with pytest.raises(CalogenError, match="retrain"):
        Preprocessor.load(tmp_path)


def test_out_of_range_and_bad_input(data):
    geometry, energies, showers = data
    pre = Preprocessor.fit(geometry, energies, showers)
    assert pre.out_of_range(np.array([pre.e_min, pre.e_max, pre.e_min / 2, pre.e_max * 2])).tolist() == [False, False, True, True]
    with pytest.raises(CalogenError, match="at least 2 showers"):
        Preprocessor.fit(geometry, energies[:1], showers[:1])


def test_rescale_layers_conserves_energy_exactly():
    geometry = Geometry.builtin("tiny")
    rng = np.random.default_rng(0)
    showers = torch.tensor(rng.exponential(1.0, (4, geometry.n_voxels)))
    showers[0, geometry.layer_slice(2)] = 0  # an empty layer stays empty
    target = torch.tensor(rng.uniform(10, 1000, (4, geometry.n_layers)))
    out = rescale_layers(showers, target, torch.from_numpy(geometry.voxel_layer.astype(np.int64)))
    sums = torch.tensor(geometry.layer_energies(out.numpy()))
    expected = target.clone()
    expected[0, 2] = 0
    torch.testing.assert_close(sums, expected, rtol=1e-12, atol=0)
    assert (out[showers == 0] == 0).all()


def test_cut_and_rescale_fills_groups_left_empty_without_overflow():
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    raw = torch.tensor([[5.0, 0.01, 2.0, 1e-20, 3e-20, 2e-20, 0.0, 0.0, 0.0]])  # float32; threshold 0.015
    targets = torch.tensor([[700.0, 500.0, 80.0]])
    out = cut_and_rescale(raw, targets, groups, 0.015)
    assert torch.isfinite(out).all()
    sums = torch.zeros(1, 3).index_add_(1, groups, out)
    torch.testing.assert_close(sums, targets, rtol=1e-6, atol=0)
    assert out[0, 1] == 0 and out[0, 0] / out[0, 2] == pytest.approx(2.5)  # cut below threshold, then rescaled
    assert out[0, 4] == out[0, 3:6].max() and out[0, 4] > 0.7 * 500  # the empty group's energy goes to its largest voxel
    torch.testing.assert_close(out[0, 6:], torch.full((3,), 80.0 / 3))  # all zero, no logits to order them: spread evenly


@pytest.mark.parametrize("name", ["ds2", "ds1-pions"])
def test_ring_groups_sum_like_the_readout(name):
    geometry = Geometry.builtin(name)
    groups = energy_groups(geometry, "rings")
    layers = geometry.nonempty_layers
    assert groups.max() + 1 == sum(geometry.layers[i].n_r for i in layers)  # DS2: 45 layers x 9 radial bins = 405
    showers = np.random.default_rng(1).exponential(1.0, (3, geometry.n_voxels))
    rings = group_sums(showers, groups)
    first = 0
    for i in layers:  # each ring is one radial bin of one layer, summed over alpha
        layer = geometry.layers[i]
        expected = showers[:, geometry.layer_slice(i)].reshape(3, layer.n_alpha, layer.n_r).sum(axis=1)
        np.testing.assert_allclose(rings[:, first : first + layer.n_r], expected, rtol=1e-12)
        first += layer.n_r
    np.testing.assert_allclose(group_sums(showers, energy_groups(geometry)), geometry.layer_energies(showers)[:, list(layers)], rtol=1e-12)
    with pytest.raises(CalogenError, match="unknown energy grouping"):
        energy_groups(geometry, "voxels")


def test_ring_vector_round_trip(data):
    geometry, energies, showers = data
    groups = energy_groups(geometry, "rings")
    pre = Preprocessor.fit(geometry, energies, showers, groups=groups)
    vec = layer_vector(geometry, showers, groups)
    assert pre.layer_dim == vec.shape[1] == 1 + groups.max() + 1
    e = torch.tensor(energies)
    rings = pre.layers_inverse(pre.layers_forward(torch.tensor(vec), e), e).numpy()
    np.testing.assert_allclose(rings, group_sums(showers, groups), rtol=1e-5, atol=1e-9)
