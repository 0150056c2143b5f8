"""calogen.eval.separation and calogen.eval.histograms: the formula, the binning, statistical behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from calogen.eval.histograms import GROUPS, HistogramError, compare_features, uses_ds1_conventions
from calogen.eval.separation import (
    density_histogram,
    separation_from_counts,
    separation_power,
    sorted_counts,
    wasserstein,
    wasserstein_from_counts,
    wasserstein_sorted,
)
from calogen.features import ShowerFeatures, compute_features
from calogen.geometry import Geometry


def test_separation_power_identical_disjoint_and_by_hand() -> None:
    bins = np.array([0.0, 1.0, 3.0, 4.0])
    p = np.array([0.2, 0.2, 0.4])  # densities: fractions 0.2, 0.4, 0.4
    assert separation_power(p, p, bins) == 0.0
    assert separation_power(np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), bins) == pytest.approx(1.0)
    q = np.array([0.4, 0.1, 0.4])  # fractions 0.4, 0.2, 0.4
    expected = 0.5 * ((0.2 - 0.4) ** 2 / 0.6 + (0.4 - 0.2) ** 2 / 0.6)
    assert separation_power(p, q, bins) == pytest.approx(expected, rel=1e-12)


def test_histograms_match_numpy() -> None:
    values = np.random.default_rng(1).normal(0.0, 1.0, 1000).astype(np.float32)
    bins = np.array([-2.0, -0.5, 0.0, 0.25, 1.0, float(values.max())])
    expected_density, _ = np.histogram(values, bins, density=True)
    density, counts = density_histogram(values, bins)
    np.testing.assert_array_equal(counts, np.histogram(values, bins)[0])
    np.testing.assert_array_equal(sorted_counts(np.sort(values), bins), counts)
    np.testing.assert_allclose(density, expected_density, rtol=1e-15)
    assert density_histogram(values, np.array([10.0, 11.0]))[0].tolist() == [0.0]  # numpy: NaN


def test_wasserstein_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 300), rng.normal(0.5, 1, 200)
    assert wasserstein(a, b) == pytest.approx(wasserstein_distance(a, b), rel=1e-12)
    assert wasserstein(np.append(a, np.nan), b) == pytest.approx(wasserstein_distance(a, b), rel=1e-12)
    assert wasserstein_sorted(np.sort(a), np.sort(b)) == pytest.approx(wasserstein_distance(a, b), rel=1e-12)
    ties_a, ties_b = np.sort(rng.integers(0, 5, 400)).astype(float), np.sort(rng.integers(1, 7, 300)).astype(float)
    assert wasserstein_sorted(ties_a, ties_b) == pytest.approx(wasserstein_distance(ties_a, ties_b), rel=1e-12)
    assert wasserstein_sorted(ties_a, ties_a) == 0.0
    support = np.array([1.0, 2.0, 4.0, 8.0])
    u, v = np.array([3, 0, 1, 2]), np.array([0, 2, 2, 1])
    assert wasserstein_from_counts(support, u, v) == pytest.approx(wasserstein_distance(support, support, u, v))


# --- a toy shower model: Gamma longitudinal profile, exponential radial profile, Poisson hit counts ---
def _toy(g: Geometry, n: int, seed: int, *, scale: float = 1.0, move_layer: int | None = None) -> ShowerFeatures:
    rng = np.random.default_rng(seed)
    e_inc = np.exp(rng.uniform(np.log(1e3), np.log(1e5), n))
    n_layers, n_alpha, n_r = g.shape
    depth = np.arange(n_layers) + 0.5
    profile = depth ** (2.0 - 1.0) * np.exp(-depth / 1.2)  # Gamma(2, 1.2) shape
    profile /= profile.sum()
    radial = np.exp(-np.asarray(g.layers[0].r_centres()) / 6.0)
    radial /= radial.sum()
    mean_hits = np.einsum("l,r->lr", profile, radial)[:, None, :].repeat(n_alpha, axis=1) / n_alpha
    hits = rng.poisson(300.0 * (e_inc[:, None, None, None] / 1e3) ** 0.3 * mean_hits)
    showers = (hits * rng.gamma(4.0, 0.25, hits.shape)).reshape(n, -1)
    showers *= (e_inc / np.maximum(showers.sum(axis=1), 1e-9) * rng.normal(1.0, 0.02, n))[:, None]
    showers = g.reshape(showers.astype(np.float32)).copy()
    if move_layer is not None:  # the energy of one layer moved into the next
        showers[:, move_layer + 1] += showers[:, move_layer]
        showers[:, move_layer] = 0.0
    return compute_features(e_inc, showers.reshape(n, -1) * np.float32(scale), g)


@pytest.fixture(scope="module")
def toy_samples() -> dict[str, ShowerFeatures]:
    g = Geometry.builtin("tiny")
    return {
        "reference": _toy(g, 4000, 1),
        "same": _toy(g, 4000, 2),
        "scaled": _toy(g, 4000, 2, scale=1.05),
        "moved": _toy(g, 4000, 2, move_layer=1),
    }


def _by_name(hists) -> dict[str, float]:
    return {h.name: h.separation for h in hists}


def test_every_official_histogram_is_produced(toy_samples) -> None:
    ref = toy_samples["reference"]
    hists = compare_features(ref, toy_samples["same"])
    names = [h.name for h in hists]
    assert len(names) == len(set(names))
    assert [g for g in GROUPS if g in {h.group for h in hists}] == list(dict.fromkeys(h.group for h in hists))
    n_layers = ref.geometry.n_layers
    counts = {group: sum(h.group == group for h in hists) for group in GROUPS}
    assert counts == {
        "e_ratio": 1, "e_ratio_per_einc": 0, "e_layer": n_layers, "eta_centre": n_layers, "phi_centre": n_layers,
        "eta_width": n_layers, "phi_width": n_layers, "r_centre": n_layers, "r_width": n_layers,
        "sparsity": n_layers, "voxel_spectrum": 1,
    }  # fmt: skip
    by = {h.name: h for h in hists}
    np.testing.assert_array_equal(by["e_ratio"].bins, np.linspace(0.5, 1.5, 101))
    np.testing.assert_array_equal(by["eta_centre_2"].bins, np.linspace(-30, 30, 101))
    np.testing.assert_array_equal(by["phi_width_2"].bins, np.linspace(0, 30, 101))
    e2 = ref.e_layer[:, 2]
    np.testing.assert_array_equal(by["e_layer_2"].bins, np.logspace(np.log10(ref.threshold), np.log10(e2.max()), 40))
    assert by["voxel_spectrum"].bins.size == 50 and by["voxel_spectrum"].log_x
    # the official upper edge: log10 of the float32 maximum taken in float32
    top = np.log10(np.float32(ref.voxel_spectrum.max_value))
    assert top.dtype == np.float32 and by["voxel_spectrum"].bins[-1] == 10 ** np.float64(top)
    # official sparsity (fraction of zero voxels, 20 bins) and radial ranges ((0, 42) and (0, 20) mm)
    np.testing.assert_array_equal(by["sparsity_1"].bins, np.linspace(0, 1, 21))
    np.testing.assert_array_equal(by["sparsity_1"].reference_counts, np.histogram(ref.sparsity[:, 1], np.linspace(0, 1, 21))[0])
    np.testing.assert_array_equal(by["r_centre_3"].bins, np.linspace(0, 42, 101))
    np.testing.assert_array_equal(by["r_width_3"].bins, np.linspace(0, 20, 101))
    for h in hists:  # densities normalised like np.histogram(density=True) on the raw counts
        expected, _ = np.histogram(h.bins[:-1], bins=h.bins, weights=h.reference_counts, density=True)
        np.testing.assert_allclose(h.reference, expected, rtol=1e-12)
        assert h.wasserstein is not None and h.wasserstein >= 0


def test_separation_power_equals_histogram_by_hand(toy_samples) -> None:
    ref, gen = toy_samples["reference"], toy_samples["scaled"]
    by = {h.name: h for h in compare_features(ref, gen)}
    bins = np.linspace(0.5, 1.5, 101)
    p, _ = np.histogram(ref.e_total / ref.e_inc, bins, density=True)
    q, _ = np.histogram(gen.e_total / gen.e_inc, bins, density=True)
    expected = 0.5 * np.sum((p * 0.01 - q * 0.01) ** 2 / (p * 0.01 + q * 0.01 + 1e-16))
    assert by["e_ratio"].separation == pytest.approx(expected, rel=1e-12)
    assert by["e_ratio"].wasserstein == pytest.approx(wasserstein_distance(ref.e_ratio, gen.e_ratio), rel=1e-9)


def test_same_distribution_small_distorted_large(toy_samples) -> None:
    ref = toy_samples["reference"]
    same = _by_name(compare_features(ref, toy_samples["same"]))
    scaled = _by_name(compare_features(ref, toy_samples["scaled"]))
    moved = _by_name(compare_features(ref, toy_samples["moved"]))
    assert max(same.values()) < 0.02
    assert scaled["e_ratio"] > 0.5 and scaled["e_ratio"] > 20 * same["e_ratio"]
    assert moved["e_layer_1"] == 1.0  # generated layer 1 is empty: no entry in range
    for name in ("e_layer_2", "sparsity_1", "sparsity_2", "r_centre_1", "eta_width_2"):
        assert moved[name] > 0.05 and moved[name] > 20 * same[name]
    assert moved["e_layer_0"] < 0.02 and moved["e_ratio"] < 0.02


def test_ds1_conventions_and_per_energy_histograms() -> None:
    g = Geometry.builtin("ds1-pions")
    assert uses_ds1_conventions(g) and not uses_ds1_conventions(Geometry.builtin("ds3"))
    rng = np.random.default_rng(4)
    e_inc = 2.0 ** rng.integers(8, 11, 300)
    showers = (rng.exponential(5.0, (300, g.n_voxels)) * (rng.random((300, g.n_voxels)) < 0.2)).astype(np.float32)
    f = compute_features(e_inc, showers, g)
    by = {h.name: h for h in compare_features(f, f)}
    per_e = [h for h in by.values() if h.group == "e_ratio_per_einc"]
    assert [h.name for h in per_e] == ["e_ratio_einc_256MeV", "e_ratio_einc_512MeV", "e_ratio_einc_1024MeV"]
    np.testing.assert_array_equal(per_e[0].bins, np.linspace(0.4, 1.4, 21))
    np.testing.assert_array_equal(by["eta_centre_1"].bins, np.linspace(-100, 100, 101))
    np.testing.assert_array_equal(by["eta_centre_12"].bins, np.linspace(-500, 500, 101))
    np.testing.assert_array_equal(by["eta_width_13"].bins, np.linspace(0, 400, 101))
    assert "eta_centre_0" not in by and "e_layer_5" not in by and "e_layer_14" in by
    np.testing.assert_array_equal(by["r_centre_2"].bins, np.linspace(0, 500, 101))
    np.testing.assert_array_equal(by["r_width_12"].bins, np.linspace(0, 1500, 101))
    np.testing.assert_array_equal(by["r_centre_14"].bins, np.linspace(0, 1500, 101))
    assert all(h.separation == 0.0 for h in by.values())


def test_incomparable_inputs_are_rejected(toy_samples) -> None:
    ref = toy_samples["reference"]
    other = compute_features(np.ones(2), np.ones((2, 6480), np.float32), Geometry.builtin("ds2"))
    with pytest.raises(HistogramError, match="geometry"):
        compare_features(ref, other)
    g = ref.geometry
    zero = compute_features(np.ones(3), np.ones((3, g.n_voxels), np.float32), g, threshold=0.0)
    with pytest.raises(HistogramError, match="min_energy"):
        compare_features(zero, zero)
    assert compare_features(zero, zero, min_energy=0.01)[0].separation == 0.0
    with pytest.raises(HistogramError, match="threshold"):
        compare_features(ref, zero)


def test_histograms_without_entries_in_range(toy_samples) -> None:
    """All-zero generated showers: E ratio 0 lies outside [0.5, 1.5], so the generated histogram is empty
    there; separation power 1 (the official density is 0/0 = NaN), and 0 where both are empty."""
    ref = toy_samples["reference"]
    g = ref.geometry
    zero = compute_features(np.full(50, 1e3), np.zeros((50, g.n_voxels), np.float32), g)
    by = _by_name(compare_features(ref, zero))
    assert by["e_ratio"] == 1.0 and by["e_layer_0"] == 1.0 and by["voxel_spectrum"] == 1.0
    assert _by_name(compare_features(zero, zero))["e_ratio"] == 0.0
    assert separation_from_counts(np.array([3, 0]), np.array([0, 0]), np.array([0.0, 1.0, 2.0])) == 1.0
    assert separation_from_counts(np.array([0, 0]), np.array([0, 0]), np.array([0.0, 1.0, 2.0])) == 0.0
