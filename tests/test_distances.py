"""FPD, KPD and PRDC: closed forms, null and shifted samples, unbiasedness, blocked k-NN, determinism, weights."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from scipy.stats import ortho_group

from calogen.errors import CalogenError
from calogen.eval.distances import (
    DistanceError,
    fpd,
    frechet_distance,
    kpd,
    scale_by_reference,
)
from calogen.eval.mmd import mmd2_polynomial
from calogen.eval.prdc import prdc

SMALL_FPD = {"min_samples": 400, "max_samples": 1500, "num_batches": 5}


def _gauss(seed: int, n: int = 3000, d: int = 4, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(shift, 1.0, size=(n, d))


def test_frechet_distance_closed_form_diagonal():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = 0.25 + 4.0 + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)  # = 4.25 + 4 + 1
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-10)
    assert expected == pytest.approx(9.25)


def test_frechet_distance_non_commuting_covariances():
    rng = np.random.default_rng(1)
    rot = ortho_group.rvs(4, random_state=2)
    s1 = np.diag([1.0, 2.0, 3.0, 4.0])
    s2 = rot @ np.diag([0.5, 1.0, 5.0, 2.0]) @ rot.T
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    # tr (s1 s2)^(1/2) = tr (s1^(1/2) s2 s1^(1/2))^(1/2), the latter symmetric positive definite
    root1 = np.sqrt(s1)
    eig = np.linalg.eigvalsh(root1 @ s2 @ root1)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(eig))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_scale_by_reference_uses_reference_maxima():
    ref = np.array([[1.0, -4.0, 0.0], [-2.0, 2.0, 0.0]])
    gen = np.array([[4.0, 8.0, 3.0], [0.0, 0.0, 0.0]])
    ref_s, gen_s = scale_by_reference(ref, gen)
    np.testing.assert_allclose(ref_s, [[0.5, -1.0, 0.0], [-1.0, 0.5, 0.0]])
    np.testing.assert_allclose(gen_s, [[2.0, 2.0, 3.0], [0.0, 0.0, 0.0]])  # zero column left unscaled


def test_fpd_null_and_shifted():
    ref, same, shifted = _gauss(0), _gauss(1), _gauss(2, shift=0.3)
    null = fpd(ref, same, **SMALL_FPD)
    assert 0.0 <= null.value < max(3 * null.error, 2e-3)
    far = fpd(ref, shifted, **SMALL_FPD)
    assert far.value > 10 * far.error and far.value > 20 * null.value + 0.01


def test_fpd_handles_constant_features_without_warning():
    # a feature constant in both samples (an always-empty layer) makes every covariance singular
    ref, gen = _gauss(21), _gauss(22)
    ref[:, 0] = gen[:, 0] = -8.0
    result = fpd(ref, gen, **SMALL_FPD)
    assert np.isfinite(result.value) and result.value < max(3 * result.error, 2e-3)


def test_fpd_extrapolates_to_population_distance():
    # unscaled N(0, I) vs N(0.5, I) in 4 dimensions: population Fréchet distance 4 * 0.25 = 1
    result = fpd(_gauss(3, n=4000), _gauss(4, n=4000, shift=0.5), scaled=True, **SMALL_FPD)
    assert result.value == pytest.approx(1.0, abs=0.1)


def test_fpd_adapts_sizes_to_small_samples_and_records_them():
    result = fpd(_gauss(5, n=1000), _gauss(6, n=800), seed=3, adapt_to_sample_size=True)
    settings = result.to_dict()["settings"]
    assert settings["adapted_to_sample_size"] is True
    assert settings["max_samples"] == 800 and settings["min_samples"] == 160
    assert settings["batch_sizes"][0] == 160 and settings["batch_sizes"][-1] == 800
    value, error = result
    assert (value, error) == (result.value, result.error)


def test_fpd_and_kpd_defaults_are_the_official_settings():
    """Official evaluate.py: jetnet fpd(min_samples=10000) and kpd(batch_size=10000), seed 42, batches drawn
    with replacement at those sizes even from smaller samples."""
    ref, gen = _gauss(23, n=300, d=3), _gauss(24, n=200, d=3, shift=0.5)
    settings = fpd(ref, gen).settings
    official_sizes = (1.0 / np.linspace(1.0 / 10_000, 1.0 / 50_000, 10)).astype(np.int64).tolist()
    assert settings["batch_sizes"] == official_sizes and settings["seed"] == 42
    assert (settings["num_points"], settings["num_batches"], settings["adapted_to_sample_size"]) == (10, 20, False)
    assert kpd.__kwdefaults__ == {"seed": 42, "num_batches": 10, "batch_size": 10_000, "scaled": False,
                                  "adapt_to_sample_size": False, "generated_weights": None}  # fmt: skip
    small = kpd(ref, gen, batch_size=1000)
    assert small.settings["batch_size"] == 1000 and not small.settings["adapted_to_sample_size"]
    assert kpd(ref, gen, batch_size=1000, adapt_to_sample_size=True).settings["batch_size"] == 200


def test_kpd_null_and_shifted():
    ref, same, shifted = _gauss(7), _gauss(8), _gauss(9, shift=0.3)
    null = kpd(ref, same, batch_size=1000)
    assert abs(null.value) < max(3 * null.error, 1e-4)
    far = kpd(ref, shifted, batch_size=1000)
    assert far.value > 5 * far.error and far.value > 50 * abs(null.value)


def test_mmd2_polynomial_matches_direct_formula():
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3))

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float((a @ b / 3 + 1) ** 4)

    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / 42
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
    xy = sum(k(a, b) for a in x for b in y) / 35
    assert mmd2_polynomial(x, y, block_elements=4) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_mmd2_polynomial_is_unbiased():
    rng = np.random.default_rng(11)
    draws = [mmd2_polynomial(rng.normal(size=(100, 3)), rng.normal(size=(100, 3))) for _ in range(300)]
    mean, sem = np.mean(draws), np.std(draws, ddof=1) / np.sqrt(len(draws))
    assert abs(mean) < 4 * sem
    shifted = [mmd2_polynomial(rng.normal(size=(100, 3)), rng.normal(0.5, 1, size=(100, 3))) for _ in range(20)]
    assert np.mean(shifted) > 20 * sem


def test_unit_weights_reproduce_unweighted_fpd_and_kpd():
    ref, gen = _gauss(25, n=1200), _gauss(26, n=900, shift=0.2)
    ones = np.ones(len(gen))
    plain, unit = fpd(ref, gen, seed=7, **SMALL_FPD), fpd(ref, gen, seed=7, generated_weights=ones, **SMALL_FPD)
    np.testing.assert_allclose(unit.settings["mean_fd_per_size"], plain.settings["mean_fd_per_size"], rtol=1e-12)
    # the same mean distances to round-off; the extrapolation's iterative fit (tolerance 1e-8) passes them on
    assert (unit.value, unit.error) == pytest.approx((plain.value, plain.error), rel=1e-6)
    assert unit.settings["generated_weighted"] and unit.settings["generated_ess"] == pytest.approx(900)
    assert not plain.settings["generated_weighted"]
    plain_k, unit_k = kpd(ref, gen, seed=7, batch_size=500), kpd(ref, gen, seed=7, batch_size=500, generated_weights=ones)
    assert (unit_k.value, unit_k.error) == pytest.approx((plain_k.value, plain_k.error), rel=1e-9)
    # a constant weight is no weight: the weighted statistics are scale invariant
    assert fpd(ref, gen, seed=7, generated_weights=np.full(len(gen), 3.5), **SMALL_FPD).value == pytest.approx(plain.value, rel=1e-6)


def test_weighted_mmd2_matches_direct_formula():
    rng = np.random.default_rng(27)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(5, 3))
    u, v = rng.uniform(0.2, 2.0, 6), rng.uniform(0.2, 2.0, 5)
    kxx, kyy, kxy = ((a @ b.T / 3 + 1) ** 4 for a, b in ((x, x), (y, y), (x, y)))
    off_x, off_y = ~np.eye(6, dtype=bool), ~np.eye(5, dtype=bool)
    xx = (np.outer(u, u) * kxx)[off_x].sum() / np.outer(u, u)[off_x].sum()
    yy = (np.outer(v, v) * kyy)[off_y].sum() / np.outer(v, v)[off_y].sum()
    xy = u @ kxy @ v / (u.sum() * v.sum())
    got = mmd2_polynomial(x, y, x_weights=u, y_weights=v, block_elements=4)
    assert got == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    assert mmd2_polynomial(x, y, y_weights=np.ones(5)) == pytest.approx(mmd2_polynomial(x, y), rel=1e-12)


def test_exact_density_ratio_weights_remove_a_known_shift():
    """Candidate N(0.3, 1) in one feature, weighted by N(0, 1) / N(0.3, 1), against an N(0, 1) reference."""
    ref, cand = _gauss(28, n=4000), _gauss(29, n=4000)
    cand[:, 0] += 0.3
    ratio = np.exp(-0.3 * cand[:, 0] + 0.045)
    plain = fpd(ref, cand, scaled=True, **SMALL_FPD)
    weighted = fpd(ref, cand, scaled=True, generated_weights=ratio, **SMALL_FPD)
    assert plain.value == pytest.approx(0.09, abs=0.04)  # population distance 0.3², plus the finite samples
    assert weighted.value < 0.15 * plain.value and weighted.value < plain.value - 5 * plain.error
    plain_k = kpd(ref, cand, scaled=True, batch_size=2000)
    weighted_k = kpd(ref, cand, scaled=True, batch_size=2000, generated_weights=ratio)
    null_k = kpd(ref, _gauss(30, n=4000), scaled=True, batch_size=2000)  # resampled finite samples keep a floor
    assert plain_k.value > 5 * plain_k.error
    assert weighted_k.value < 0.15 * plain_k.value and weighted_k.value < null_k.value + 3 * null_k.error


def _prdc_brute(ref: np.ndarray, gen: np.ndarray, k: int) -> tuple[float, float, float, float]:
    """Naeem et al. 2020 with full distance matrices."""
    rr, gg, rg = cdist(ref, ref), cdist(gen, gen), cdist(ref, gen)
    r_rad = np.sort(rr, axis=1)[:, k]
    g_rad = np.sort(gg, axis=1)[:, k]
    inside = rg < r_rad[:, None]
    return (
        inside.any(axis=0).mean(),
        (rg < g_rad[None, :]).any(axis=1).mean(),
        inside.sum(axis=0).mean() / k,
        (rg.min(axis=1) < r_rad).mean(),
    )


def test_prdc_blocked_matches_brute_force():
    ref, gen = _gauss(12, n=150, d=3), _gauss(13, n=120, d=3, shift=0.4)
    result = prdc(ref, gen, k=5, scaled=True, block_elements=50)
    expected = _prdc_brute(ref, gen, 5)
    got = (result.precision, result.recall, result.density, result.coverage)
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0 < result.precision < 1 and 0 < result.coverage < 1


def test_prdc_identical_and_disjoint():
    ref = _gauss(14, n=2000)
    same = prdc(ref, ref)
    assert (same.precision, same.recall, same.density, same.coverage) == pytest.approx((1.0, 1.0, 1.0, 1.0))
    twin = prdc(ref, _gauss(15, n=2000))
    assert twin.density == pytest.approx(1.0, abs=0.1)
    assert twin.coverage == pytest.approx(1 - 0.5**5, abs=0.03)  # large-N limit of coverage at k = 5
    assert min(twin.precision, twin.recall) > 0.8
    far = prdc(ref, _gauss(16, n=2000, shift=50.0))
    assert (far.precision, far.recall, far.density, far.coverage) == (0.0, 0.0, 0.0, 0.0)


def test_prdc_subsamples_and_records():
    result = prdc(_gauss(17, n=900), _gauss(18, n=700), max_samples=500, seed=1)
    settings = result.to_dict()["settings"]
    assert settings["n_reference"] == 500 and settings["n_generated"] == 500 and settings["k"] == 5


def test_results_are_deterministic_for_a_seed():
    ref, gen = _gauss(19, n=1500), _gauss(20, n=1500, shift=0.1)
    assert fpd(ref, gen, seed=4, **SMALL_FPD) == fpd(ref, gen, seed=4, **SMALL_FPD)
    assert fpd(ref, gen, seed=4, **SMALL_FPD).value != fpd(ref, gen, seed=5, **SMALL_FPD).value
    assert kpd(ref, gen, seed=4, batch_size=500) == kpd(ref, gen, seed=4, batch_size=500)
    assert prdc(ref, gen, max_samples=800, seed=4) == prdc(ref, gen, max_samples=800, seed=4)
    # scaling is idempotent: pre-scaled input with scaled=True gives the same numbers
    pre = scale_by_reference(ref, gen)
    assert kpd(*pre, seed=4, batch_size=500, scaled=True).value == kpd(ref, gen, seed=4, batch_size=500).value


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: fpd(np.ones((10, 3)), np.ones((10, 4))), "3 features but generated has 4"),
        (lambda: kpd(np.full((10, 2), np.nan), np.ones((10, 2))), "NaN/inf"),
        (lambda: prdc(np.ones(10), np.ones(10)), "shape \\(n_showers, n_features\\)"),
        (lambda: prdc(_gauss(0, n=5), _gauss(1, n=5), k=5), "k must be between 1 and 4"),
        (lambda: fpd(_gauss(0, n=4), _gauss(1, n=4), adapt_to_sample_size=True), "needs more showers"),
        (lambda: kpd(_gauss(0, n=1), _gauss(1, n=9)), "at least 2 showers"),
        (lambda: fpd(_gauss(0), _gauss(1), min_samples=100, max_samples=100), "min_samples < max_samples"),
        (lambda: fpd(_gauss(0), _gauss(1), generated_weights=np.ones(5)), "shape \\(3000,\\), one per generated"),
        (lambda: kpd(_gauss(0), _gauss(1), generated_weights=-np.ones(3000)), ">= 0 with a positive sum"),
    ],
)
def test_bad_input_raises_distance_error(call, message):
    with pytest.raises(DistanceError, match=message) as info:
        call()
    assert isinstance(info.value, CalogenError)
