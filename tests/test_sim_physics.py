"""Physics modules of the detailed simulation against hand-computed and tabulated values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

from calogen.sim.materials import material
from calogen.sim.physics import brems, compton, fluctuations, ionisation, msc, pair, photoelectric, rng
from calogen.sim.physics.constants import ELECTRON_MASS
from calogen.sim.physics.tables import build_tables, photon_attenuation

BARN_MM2 = 1e-22


def _state(seed: int) -> np.ndarray:
    state = np.zeros(4, dtype=np.uint64)
    rng.seed_state(state, seed)
    return state


def _mass_attenuation(name: str, k: float) -> np.ndarray:
    """Per-process mass attenuation, cm^2/g."""
    medium = material(name)
    return photon_attenuation(medium, np.array([k]))[0] / (medium.density * 0.1)


# --- photons -----------------------------------------------------------------------------------
def test_klein_nishina_at_1_mev() -> None:
    # kappa = 1.957: 2 pi re^2 {...} = 0.2112 b
    assert compton.cross_section_per_electron(np.array(1.0)) / BARN_MM2 == pytest.approx(0.2112, rel=2e-3)
    # Thomson limit 8/3 pi re^2 = 0.6652 b
    assert compton.cross_section_per_electron(np.array(1e-5)) / BARN_MM2 == pytest.approx(0.6652, rel=1e-3)


def test_tungsten_attenuation_at_1_mev_matches_xcom() -> None:
    assert 0.063 <= _mass_attenuation("W", 1.0).sum() <= 0.066  # XCOM without coherent scattering: 0.064


def test_tungsten_k_edge() -> None:
    below, above = photoelectric.mass_attenuation("W", np.array([0.0694, 0.0697]))
    assert 4.0 < above / below < 6.0
    assert photoelectric.binding_energy(np.array(photoelectric.EDGES["W"]), 0.0697) == pytest.approx(69.525e-3)
    assert photoelectric.binding_energy(np.array(photoelectric.EDGES["W"]), 0.0694) == pytest.approx(12.100e-3)


def test_pair_cross_section_approaches_complete_screening() -> None:
    # sigma -> 7/9 A / (N_A X0): W 35.1 b, Si 1.66 b (X0 = 6.76, 21.82 g/cm2)
    assert pair.cross_section(74, np.array(5e4)) / BARN_MM2 == pytest.approx(35.1, rel=0.03)
    assert pair.cross_section(14, np.array(5e4)) / BARN_MM2 == pytest.approx(1.66, rel=0.03)
    assert pair.cross_section(74, np.array([1.0, 1.021])).tolist() == [0.0, 0.0]


def test_pair_dominates_tungsten_at_10_mev() -> None:
    photo, comp, pairs = _mass_attenuation("W", 10.0)
    assert pairs == pytest.approx(0.036, rel=0.05)  # XCOM nuclear + electron field: 0.0362 cm2/g
    assert pairs > 2 * comp > photo


def test_compton_sampling_mean_energy() -> None:
    k = 1.0
    state = _state(1)
    eps = np.array([compton.sample_scattering(k, state)[0] for _ in range(20000)])
    kappa = k / ELECTRON_MASS

    def dsigma(e: float) -> float:  # Klein-Nishina in eps
        cos_t = 1.0 - (1.0 - e) / (e * kappa)
        return (1.0 / e + e) * (1.0 - e * (1.0 - cos_t**2) / (1.0 + e * e))

    lo = 1.0 / (1.0 + 2.0 * kappa)
    mean = quad(lambda e: e * dsigma(e), lo, 1.0)[0] / quad(dsigma, lo, 1.0)[0]
    assert eps.min() >= lo
    assert eps.mean() == pytest.approx(mean, abs=0.005)


def test_pair_energy_sharing_is_flat_ish_and_symmetric() -> None:
    state = _state(2)
    x = np.array([pair.sample_energy_fraction(1000.0, state) for _ in range(20000)])
    assert x.mean() == pytest.approx(0.5, abs=0.01)
    # density 1 - 4/3 x (1-x) normalised on [0, 1]: P(x < 0.1) = (0.1 - 2/3 0.01 + 4/9 0.001) / (7/9)
    assert np.mean(x < 0.1) == pytest.approx(0.1209, abs=0.01)


# --- leptons -----------------------------------------------------------------------------------
def test_stopping_power_matches_estar() -> None:
    w, si = material("W"), material("Si")
    # ESTAR collision stopping power at 1 MeV: W about 1.05, Si 1.494 MeV cm2/g (unrestricted = restricted at T/2)
    assert ionisation.restricted_dedx(w, np.array(1.0), 0.5, False) / (w.density * 0.1) == pytest.approx(1.05, rel=0.05)
    assert ionisation.restricted_dedx(si, np.array(1.0), 0.5, False) / (si.density * 0.1) == pytest.approx(1.494, rel=0.03)


def test_restricted_loss_plus_delta_rays_is_total_loss() -> None:
    si = material("Si")
    t, cut = 100.0, 0.5
    restricted = ionisation.restricted_dedx(si, np.array(t), cut, False)
    full = ionisation.restricted_dedx(si, np.array(t), t / 2, False)
    # the Moller spectrum above the cut, weighted by the energy transfer, fills the gap (numerically)
    state = _state(3)
    x = np.array([ionisation.sample_delta_fraction(t, cut, False, state) for _ in range(40000)])
    above = ionisation.delta_inverse_mean_free_path(si, np.array(t), cut, False) * t * x.mean()
    assert x.min() >= cut / t and x.max() <= 0.5
    assert restricted + above == pytest.approx(full, rel=0.03)


def test_bhabha_allows_full_transfer() -> None:
    state = _state(4)
    x = np.array([ionisation.sample_delta_fraction(10.0, 0.5, True, state) for _ in range(5000)])
    assert x.max() > 0.5 and x.min() >= 0.05


def test_brems_spectrum_integrates_to_inverse_mean_free_path() -> None:
    x0, t, cut = 3.504, 1000.0, 0.1
    e = t + ELECTRON_MASS
    damping = brems.low_energy_damping(np.array(t))
    integral = quad(lambda k: (4 / 3 - 4 / 3 * k / e + (k / e) ** 2) / k, cut, t, limit=200)[0] * damping / x0
    assert brems.inverse_mean_free_path(x0, np.array(t), cut) == pytest.approx(integral, rel=1e-6)
    soft = quad(lambda k: 4 / 3 - 4 / 3 * k / e + (k / e) ** 2, 0, cut)[0] * damping / x0
    assert brems.soft_loss(x0, np.array(t), cut) == pytest.approx(soft, rel=1e-6)


def test_brems_sampling_stays_in_range() -> None:
    state = _state(5)
    k = np.array([brems.sample_photon_energy(10.0, 0.1, state) for _ in range(5000)])
    assert k.min() >= 0.1 and k.max() <= 10.0
    # for y << 1 the spectrum is 1/k: half the photons below sqrt(0.1 * 10) = 1 MeV, a bit more with y terms
    assert 0.5 < np.mean(k < 1.0) < 0.6


def test_highland_formula_by_hand() -> None:
    # 1 GeV electron through 1 X0: beta c p = 1000 * 1001.022 / 1000.511 MeV, theta0 = 13.6 / 1000.51 * 1
    t0 = msc.highland_theta0(1000.0, 3.504, 3.504, 0.05)
    assert t0 == pytest.approx(13.6 / (1000.0 * 1001.02199790 / 1000.51099895), rel=1e-9)
    # 0.1 X0: log term 1 + 0.038 ln 0.1 = 0.91250
    assert msc.highland_theta0(1000.0, 0.3504, 3.504, 0.05) == pytest.approx(t0 * math.sqrt(0.1) * 0.912502, rel=1e-5)
    # below the clamp the log term stays at 1 + 0.038 ln 0.05
    ratio = msc.highland_theta0(1000.0, 0.003504, 3.504, 0.05) / (t0 * math.sqrt(0.001))
    assert ratio == pytest.approx(1 + 0.038 * math.log(0.05), rel=1e-9)


def test_path_length_transformation_round_trips() -> None:
    lam = 0.05
    for s in (1e-4, 0.01, 0.2):
        g = msc.geometric_length(s, lam)
        assert g < s
        assert msc.true_length(g, lam) == pytest.approx(s, rel=1e-9)
    assert msc.true_length(lam, lam) == math.inf


def test_scattering_moments() -> None:
    state = _state(6)
    for theta0 in (0.05, 1.0):
        out = np.array([msc.scatter(0.0, 0.0, 1.0, theta0, 1.0, state) for _ in range(20000)])
        assert out[:, 5].mean() == pytest.approx(math.exp(-theta0**2), abs=0.01)  # <cos theta> = exp(-tau)
        assert (out[:, 0] ** 2 + out[:, 1] ** 2).mean() == pytest.approx(msc.lateral_variance(1.0, theta0**2), rel=0.04)
        assert np.abs(out[:, 2]).max() == 0.0  # displacement is perpendicular to (0, 0, 1)
    assert msc.lateral_variance(1.0, 1e-3 * 0.999) == pytest.approx(msc.lateral_variance(1.0, 1e-3 * 1.001), rel=1e-2)
    assert msc.lateral_variance(1.0, 1e-4) == pytest.approx(1e-4 / 3 * 2, rel=1e-3)  # PDG: s^2 theta0^2 / 3 per plane


def test_fluctuation_moments() -> None:
    state = _state(7)
    var = fluctuations.bohr_variance(100.0, material("Si").electron_density, 0.5, 0.3)
    # 2 pi re^2 me n_el Tc s (1/beta^2 - 1/2) = 2.55e-23 * 6.99e20 * 0.5 * 0.3 * 0.5
    assert var == pytest.approx(2.5496e-23 * 6.9934e20 * 0.5 * 0.3 * (1 / (1 - 2.6e-5) - 0.5), rel=1e-3)
    loss = np.array([fluctuations.sample_loss(0.1, var, state) for _ in range(20000)])
    assert loss.min() > 0
    assert loss.mean() == pytest.approx(0.1, rel=0.01)
    assert loss.var() == pytest.approx(var, rel=0.05)


# --- random numbers and tables -------------------------------------------------------------------
def test_rng_is_seeded_and_uniform() -> None:
    a, b = _state(9), _state(9)
    draws = np.array([rng.uniform(a) for _ in range(10000)])
    assert draws.tolist()[:5] == [rng.uniform(b) for _ in range(5)]
    assert draws.mean() == pytest.approx(0.5, abs=0.01) and 0 <= draws.min() and draws.max() < 1
    assert rng.uniform(_state(10)) != rng.uniform(_state(9))


def test_gamma_sampler_moments() -> None:
    state = _state(11)
    for shape in (0.3, 4.0):
        x = np.array([rng.gamma(state, shape) for _ in range(20000)])
        assert x.mean() == pytest.approx(shape, rel=0.03)
        assert x.var() == pytest.approx(shape, rel=0.06)


def test_normal_pair_and_azimuth_laws() -> None:
    state = _state(12)
    z = np.array([rng.normal_pair(state) for _ in range(20000)])
    assert z.mean(axis=0) == pytest.approx([0.0, 0.0], abs=0.03)
    assert z.var(axis=0) == pytest.approx([1.0, 1.0], rel=0.04)
    assert abs(np.corrcoef(z.T)[0, 1]) < 0.03
    cs = np.array([rng.random_azimuth(state) for _ in range(20000)])
    np.testing.assert_allclose(np.hypot(cs[:, 0], cs[:, 1]), 1.0, rtol=1e-12)
    counts = np.histogram(np.arctan2(cs[:, 1], cs[:, 0]), bins=8, range=(-math.pi, math.pi))[0]
    assert ((counts - 2500) ** 2 / 2500).sum() < 24.3  # chi2, 7 degrees of freedom, p = 0.001


def test_highland_factors_multiply_to_theta0() -> None:
    path = msc.highland_path_factor(0.7, 3.504, 0.05)
    assert path == pytest.approx(math.sqrt(0.7 / 3.504) * (1 + 0.038 * math.log(0.7 / 3.504)), rel=1e-12)
    assert msc.highland_momentum_factor(50.0) * path == pytest.approx(msc.highland_theta0(50.0, 0.7, 3.504, 0.05), rel=1e-12)
    assert msc.highland_path_factor(0.0, 3.504, 0.05) == 0.0


def test_tables_range_is_consistent_with_stopping_power() -> None:
    t = build_tables((material("W"), material("Si")), delta_cut=0.5, brems_cut=0.1)
    energy = np.exp(t.log_energy)
    r = np.exp(t.log_range[0, 0])
    i = np.searchsorted(energy, 1.0)
    # dR/dT = 1 / S
    assert (r[i + 1] - r[i - 1]) / (energy[i + 1] - energy[i - 1]) == pytest.approx(1 / t.lepton_dedx[0, 0, i], rel=5e-3)
    # CSDA range of 1 MeV electrons in W: ESTAR 0.77 g/cm2 = 0.40 mm
    assert np.interp(0.0, t.log_energy, t.log_range[0, 0]) == pytest.approx(math.log(0.40), abs=0.08)
