"""calogen.features: hand-computed features, threshold, streaming, the official arithmetic, the HLF vector."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calogen.features import (
    FeatureAccumulator,
    FeatureError,
    compute_features,
    features_from_file,
    high_level_column_names,
    high_level_vector,
)
from calogen.geometry import Geometry
from calogen.io import write_showers
from calogen.voxel_spectrum import SPECTRUM_DROPPED_BITS, VoxelSpectrum


def _tiny_toy() -> tuple[Geometry, np.ndarray, np.ndarray]:
    """Two tiny showers (layers of 6 alpha x 4 r bins of 8 mm) with hand-placed deposits."""
    g = Geometry.builtin("tiny")
    showers = np.zeros((2, g.n_voxels), np.float32)
    showers[0, g.voxel_index(0, 0, 0)] = 3.0  # r = 4 mm, alpha = -5 pi / 6
    showers[0, g.voxel_index(0, 3, 1)] = 1.0  # r = 12 mm, alpha = pi / 6
    showers[0, g.voxel_index(2, 1, 3)] = 2.0  # r = 28 mm, alpha = -pi / 2
    showers[0, g.voxel_index(4, 2, 0)] = 1e-3  # below the 15.15 keV threshold: removed
    showers[1, g.voxel_index(1, 5, 2)] = 5.0  # r = 20 mm, alpha = 5 pi / 6
    return g, np.array([10.0, 8.0], np.float32), showers


def test_tiny_hand_computed() -> None:
    g, e_inc, showers = _tiny_toy()
    f = compute_features(e_inc, showers, g)
    assert f.n_showers == 2 and f.threshold == pytest.approx(0.5e-3 / 0.033)
    np.testing.assert_allclose(f.e_total, [6.0, 5.0])
    np.testing.assert_allclose(f.e_ratio, [0.6, 0.625])
    np.testing.assert_allclose(f.e_layer[0], [4.0, 0.0, 2.0, 0.0, 0.0])
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    eta = np.array([-4 * c, 12 * c])  # layer 0 of shower 0, weights 3 and 1
    phi = np.array([-4 * s, 12 * s])
    w = np.array([3.0, 1.0])
    eta_c, phi_c = (eta * w).sum() / 4, (phi * w).sum() / 4
    assert f.eta_centre[0, 0] == pytest.approx(eta_c)
    assert f.phi_centre[0, 0] == pytest.approx(phi_c)
    assert f.eta_width[0, 0] == pytest.approx(math.sqrt((eta**2 * w).sum() / 4 - eta_c**2))
    assert f.phi_width[0, 0] == pytest.approx(math.sqrt((phi**2 * w).sum() / 4 - phi_c**2))
    assert f.r_centre[0, 0] == pytest.approx((4 * 3 + 12 * 1) / 4)
    assert f.r_width[0, 0] == pytest.approx(math.sqrt((16 * 3 + 144) / 4 - 36))
    # one voxel: centre at the voxel, zero width; layers without energy: centre 0 and width 0
    assert f.eta_centre[0, 2] == pytest.approx(0.0, abs=1e-12) and f.phi_centre[0, 2] == pytest.approx(-28.0)
    assert f.eta_width[0, 2] == 0.0 and f.r_centre[1, 1] == pytest.approx(20.0)
    assert f.eta_centre[0, 4] == 0.0 and f.eta_width[0, 4] == 0.0 and f.r_centre[0, 4] == 0.0
    np.testing.assert_allclose(f.sparsity[0], [22 / 24, 1.0, 23 / 24, 1.0, 1.0])
    assert f.voxel_spectrum.n_values == 4 and f.voxel_spectrum.max_value == np.float32(5.0)
    expected_mean = np.where(showers < g.threshold, 0, showers).mean(axis=0)
    np.testing.assert_allclose(f.mean_shower, expected_mean)


def test_threshold_is_configurable() -> None:
    g, e_inc, showers = _tiny_toy()
    f = compute_features(e_inc, showers, g, threshold=1.5)  # removes the 1 MeV and 1 keV deposits
    np.testing.assert_allclose(f.e_layer[0], [3.0, 0.0, 2.0, 0.0, 0.0])
    assert f.r_centre[0, 0] == pytest.approx(4.0) and f.r_width[0, 0] == 0.0
    zero = compute_features(e_inc, showers, g, threshold=0.0)
    assert zero.e_layer[0, 4] == pytest.approx(1e-3)
    with pytest.raises(FeatureError, match="threshold"):
        compute_features(e_inc, showers, g, threshold=-1.0)


def test_ds1_geometry_hand_computed() -> None:
    g = Geometry.builtin("ds1-photons")  # layers 0, 1, 2, 3, 12; alpha-binned: 1 and 2
    showers = np.zeros((1, g.n_voxels), np.float32)
    showers[0, g.voxel_index(0, 0, 1)] = 0.5  # below the 1 MeV DS1 threshold
    showers[0, g.voxel_index(1, 2, 0)] = 10.0  # r = 1 mm
    showers[0, g.voxel_index(12, 0, 2)] = 40.0  # r = 300 mm, no alpha binning
    f = compute_features([1024.0], showers, g)
    assert f.threshold == 1.0
    np.testing.assert_allclose(f.e_total, [50.0])
    assert f.e_layer[0, 0] == 0.0 and f.e_layer[0, 12] == 40.0 and f.e_layer[0, 5] == 0.0
    alpha = -math.pi + 2.5 * 2 * math.pi / 10
    assert f.eta_centre[0, 1] == pytest.approx(math.cos(alpha)) and f.phi_centre[0, 1] == pytest.approx(math.sin(alpha))
    assert np.isnan(f.eta_centre[0, 12]) and np.isnan(f.phi_width[0, 0])  # not alpha-binned
    assert np.isnan(f.r_centre[0, 5]) and np.isnan(f.sparsity[0, 5])  # empty layer
    assert f.r_centre[0, 12] == pytest.approx(300.0)
    assert f.sparsity[0, 12] == pytest.approx(4 / 5)
    vec = high_level_vector(f)
    n_layers, n_binned = len(g.nonempty_layers), len(g.alpha_binned_layers)
    assert vec.shape == (1, 1 + n_layers + 4 * n_binned + 1 + 3 * n_layers) and vec.dtype == np.float64
    assert vec[0, 0] == pytest.approx(math.log10(1024.0))
    assert vec[0, 1] == pytest.approx(-8.0)  # log10(0 + 1e-8) for layer 0
    assert vec[0, 1 + n_layers] == pytest.approx(math.cos(alpha) / 100)  # eta centre of layer 1
    tail = 1 + n_layers + 4 * n_binned
    assert vec[0, tail] == pytest.approx(math.log10(50.0))  # log10(E_tot + 1e-8)
    assert vec[0, tail + n_layers] == pytest.approx(4 / 5)  # sparsity of layer 12, the last non-empty one
    assert vec[0, tail + 2 * n_layers] == pytest.approx(3.0)  # r centre of layer 12 / 100
    assert high_level_vector(f, columns="pre-2023").shape == (1, tail)


def test_shapes_and_sizes_are_checked() -> None:
    g = Geometry.builtin("tiny")
    with pytest.raises(FeatureError, match="120"):
        compute_features(np.ones(2), np.ones((2, 100), np.float32), g)
    with pytest.raises(FeatureError, match="incident energies"):
        compute_features(np.ones(3), np.ones((2, 120), np.float32), g)
    with pytest.raises(FeatureError, match="no showers"):
        FeatureAccumulator(g).result()
    showers = np.ones((2, 120), np.float32)
    showers[1, 7] = np.nan
    with pytest.raises(FeatureError, match="1 NaN"):
        compute_features(np.ones(2), showers, g)


def _random_showers(g: Geometry, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    showers = (rng.exponential(2.0, (n, g.n_voxels)) * (rng.random((n, g.n_voxels)) < 0.3)).astype(np.float32)
    return rng.uniform(1e3, 1e4, n).astype(np.float32), showers


@pytest.mark.parametrize("name", ["tiny", "ds1-pions", "ds2"])
def test_matches_official_numpy_arithmetic_bit_for_bit(name: str) -> None:
    """The compiled sums replay numpy's pairwise order: equal to the official expressions exactly."""
    g = Geometry.builtin(name)
    e_inc, showers = _random_showers(g, 64, 1)
    data = np.where(showers < g.threshold, np.float32(0), showers)
    f = compute_features(e_inc, showers, g)
    assert np.array_equal(f.e_total, data.sum(axis=-1))
    for i in g.nonempty_layers:
        d = data[:, g.layer_slice(i)]
        assert np.array_equal(f.e_layer[:, i], d.sum(axis=-1))
        assert np.array_equal(f.sparsity[:, i], 1.0 - (d > 0).mean(axis=-1))
        if i in g.alpha_binned_layers:
            x = g.voxel_eta[g.layer_slice(i)]
            centre = (x * d).sum(axis=-1) / (d.sum(axis=-1) + 1e-16)
            width = np.sqrt(((x * x * d).sum(axis=-1) / (d.sum(axis=-1) + 1e-16) - centre**2).clip(min=0.0))
            assert np.array_equal(f.eta_centre[:, i], centre) and np.array_equal(f.eta_width[:, i], width)


def test_accumulator_over_chunks_equals_one_shot(tmp_path) -> None:
    g = Geometry.builtin("ds1-pions")
    e_inc, showers = _random_showers(g, 37, 2)
    whole = compute_features(e_inc, showers, g)
    acc = FeatureAccumulator(g)
    for start in range(0, 37, 10):
        acc.update(e_inc[start : start + 10, None], showers[start : start + 10])
    parts = acc.result()
    path = tmp_path / "s.h5"
    write_showers(path, e_inc[:, None], showers)
    streamed = features_from_file(path, g, chunk_size=8)
    for other in (parts, streamed):
        for name in ("e_inc", "e_total", "e_layer", "eta_centre", "phi_width", "r_centre", "r_width", "sparsity"):
            np.testing.assert_array_equal(getattr(other, name), getattr(whole, name))
        np.testing.assert_allclose(other.mean_shower, whole.mean_shower, rtol=1e-6)
        edges = np.logspace(0, 1.5, 30)
        np.testing.assert_array_equal(other.voxel_spectrum.histogram(edges), whole.voxel_spectrum.histogram(edges))
        assert other.voxel_spectrum.max_value == whole.voxel_spectrum.max_value


def test_voxel_spectrum_grid_is_nearly_exact(monkeypatch) -> None:
    values = np.random.default_rng(3).lognormal(0.0, 1.0, 20000).astype(np.float32)
    edges = np.logspace(-1, np.log10(values.max()), 50)
    exact = VoxelSpectrum.from_values(values)
    assert exact.exact
    np.testing.assert_array_equal(exact.histogram(edges), np.histogram(values, edges)[0])
    monkeypatch.setattr("calogen.voxel_spectrum.SPECTRUM_EXACT_VALUES", 1000)
    grid = VoxelSpectrum.from_values(values[:10000]).merge(VoxelSpectrum.from_values(values[10000:]))
    assert not grid.exact and grid.n_values == values.size and grid.max_value == values.max()
    # past the budget a voxel counts at the lowest value of its cell (2^-15 relative wide)
    width = 2.0 ** (SPECTRUM_DROPPED_BITS - 23)
    cell_lows = (values.view(np.uint32) >> SPECTRUM_DROPPED_BITS << SPECTRUM_DROPPED_BITS).view(np.float32)
    assert np.all((cell_lows <= values) & (values - cell_lows < width * values))
    on_grid = np.histogram(cell_lows, edges)[0]
    np.testing.assert_array_equal(grid.histogram(edges), on_grid)
    assert 0 < np.abs(on_grid - np.histogram(values, edges)[0]).sum() <= 10  # a few voxels next to an edge


def test_exact_spectrum_histogram_at_float32_edges() -> None:
    """Edges equal to a value or one float32 step away from it bin as np.histogram does (last bin closed)."""
    values = np.array([1.0, 2.0, 2.0, np.nextafter(np.float32(2), np.float32(3)), 3.0, 4.0], np.float32)
    spectrum = VoxelSpectrum.from_values(values)
    just_below_3 = 3.0 - 1e-12
    for edges in ([1.0, 2.0, 3.0], [0.5, 2.0 + 1e-9, 4.0], [2.0, 2.0 + 2e-7, just_below_3], [5.0, 6.0]):
        edges = np.asarray(edges)
        np.testing.assert_array_equal(spectrum.histogram(edges), np.histogram(values, edges)[0])


def test_official_362_column_vector_on_ds2_in_official_order() -> None:
    """The official high-level vector of DS2, rebuilt here from its definition (CaloChallenge evaluate.py,
    prepare_high_data_for_classifier, 2025-01-02): 1 + 45 + 4 x 45 + 1 + 3 x 45 = 362 columns."""
    g = Geometry.builtin("ds2")
    e_inc, showers = _random_showers(g, 5, 4)
    showers[2, g.layer_slice(7)] = 0.0  # an empty layer: centres and widths 0, sparsity 1
    f = compute_features(e_inc, showers, g)
    vec = high_level_vector(f)
    assert vec.shape == (5, 362) and vec.dtype == np.float64
    # the Par04 readout: layer l, alpha bin a (centre -pi + (a + 1/2) 2 pi / 16), r bin k (centre (k + 1/2) 4.65 mm)
    data = np.where(showers < 0.5e-3 / 0.033, 0.0, showers.astype(np.float64)).reshape(5, 45, 16, 9)
    alpha = -np.pi + (np.arange(16) + 0.5) * 2 * np.pi / 16
    r = (np.arange(9) + 0.5) * 4.65
    coords = {"eta": r[None, :] * np.cos(alpha)[:, None], "phi": r[None, :] * np.sin(alpha)[:, None], "r": np.tile(r, (16, 1))}
    e_layer = data.sum(axis=(2, 3))
    expected = {"log10_e_inc": np.log10(e_inc), "log10_e_total": np.log10(data.sum(axis=(1, 2, 3)) + 1e-8)}
    for i in range(45):
        expected[f"log10_e_layer_{i}"] = np.log10(e_layer[:, i] + 1e-8)
        expected[f"sparsity_{i}"] = 1.0 - (data[:, i] > 0).mean(axis=(1, 2))
        for axis, c in coords.items():
            centre = (data[:, i] * c).sum(axis=(1, 2)) / (e_layer[:, i] + 1e-16)
            second = (data[:, i] * c * c).sum(axis=(1, 2)) / (e_layer[:, i] + 1e-16)
            expected[f"{axis}_centre_{i}"] = centre / 100
            expected[f"{axis}_width_{i}"] = np.sqrt(np.clip(second - centre**2, 0, None)) / 100
    order = ["log10_e_inc", *(f"log10_e_layer_{i}" for i in range(45))]
    order += [f"{name}_{i}" for name in ("eta_centre", "phi_centre", "eta_width", "phi_width") for i in range(45)]
    order += ["log10_e_total", *(f"{name}_{i}" for name in ("sparsity", "r_centre", "r_width") for i in range(45))]
    assert high_level_column_names(g) == order
    for column, name in enumerate(order):
        np.testing.assert_allclose(vec[:, column], expected[name], rtol=2e-6, atol=1e-9, err_msg=name)
    assert vec[2, order.index("sparsity_7")] == 1.0 and vec[2, order.index("r_centre_7")] == 0.0
    assert vec[2, order.index("log10_e_layer_7")] == pytest.approx(-8.0)
    assert high_level_column_names(g, "pre-2023") == order[:226]
    np.testing.assert_array_equal(high_level_vector(f, columns="pre-2023"), vec[:, :226])
    with pytest.raises(FeatureError, match="column set"):
        high_level_vector(f, columns="2022")
