"""Tests of the GFLASH parametrised simulation and its calibration."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from calogen.errors import CalogenError
from calogen.generator import Generator, derive_seed
from calogen.geometry import Geometry
from calogen.io import ShowerData
from calogen.sim.calibrate import CalibrationError, calibrate_gflash
from calogen.sim.gflash import GflashSimulation
from calogen.sim.gflash_longitudinal import mean_log_shape, n_spots, origin
from calogen.sim.gflash_params import PACKAGED, GflashParameterError, GflashParameters, default_parameters
from calogen.sim.gflash_radial import radial_parameters
from calogen.sim.gflash_spots import STEP_X0, depth_steps
from calogen.sim.readout import ReadoutTables, score_deposits
from calogen.sim.shower_profiles import profile_agreement, radial_energies

DS2 = Geometry.builtin("ds2")


# --- parameters ------------------------------------------------------------------------------------
def test_parameters_round_trip_json(tmp_path):
    params = GflashParameters.default().with_(
        depth_offset=0.7, spot_scale=1.3, profile_tilt=1.2, origin_slope=0.05, radius_slope=-0.03, provenance="test"
    )
    params.save(tmp_path / "p.json")
    assert GflashParameters.load(tmp_path / "p.json") == params
    assert GflashParameters.from_dict(json.loads((tmp_path / "p.json").read_text())) == params


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"depth_ofset": 0.5}, r"unknown GFLASH parameter\(s\) \['depth_ofset'\]"),
        ({"spot_scale": -1.0}, "spot_scale must be > 0, got -1.0"),
        ({"x0_mm": float("nan")}, "x0_mm must be a finite number"),
        ({"energy_scale": "1"}, "energy_scale must be a finite number, got '1'"),
        ({"e_hat": 1.5}, r"e_hat must lie in \(0, 1\]"),
        ({"profile_tilt": 5.5}, r"profile_tilt must lie in \[-5, 5\], got 5.5"),
        ({"radius_slope": float("inf")}, "radius_slope must be a finite number"),
    ],
)
def test_parameters_reject_bad_values(data, match):
    with pytest.raises(GflashParameterError, match=match):
        GflashParameters.from_dict(data)


def test_files_without_the_newer_parameters_still_load():
    """Files written before profile_tilt, origin_slope and radius_slope existed read as if they were 0."""
    old = {k: v for k, v in GflashParameters.default().with_(depth_offset=0.5).to_dict().items()
           if k not in ("profile_tilt", "origin_slope", "radius_slope")}  # fmt: skip
    params = GflashParameters.from_dict(old)
    assert params.depth_offset == 0.5 and params.profile_tilt == params.origin_slope == params.radius_slope == 0.0


def test_parameter_files_errors(tmp_path):
    with pytest.raises(GflashParameterError, match="no such GFLASH parameter file"):
        GflashParameters.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(GflashParameterError, match="not valid JSON"):
        GflashParameters.load(tmp_path / "bad.json")
    with pytest.raises(GflashParameterError, match="choose one of"):
        GflashParameters.packaged("ds9-muon")


@pytest.mark.parametrize("name", sorted(PACKAGED))
def test_packaged_parameters_are_calibrated(name):
    params = GflashParameters.packaged(name)
    assert params != GflashParameters.default()
    assert "calibrate_gflash" in params.provenance


def test_default_parameters_follow_the_geometry_kind():
    assert GflashSimulation(DS2, "gamma").params == GflashParameters.packaged("ds2-electron") == default_parameters("cylindrical", "e-")
    assert default_parameters("cells", "gamma") == GflashParameters.packaged("hgcal-like-gamma")
    electron = GflashParameters.packaged("hgcal-like-electron")
    assert default_parameters("cells", "e-") == default_parameters("cells", "e+") == electron
    with pytest.raises(GflashParameterError, match="no default GFLASH parameters for a 'voxels' geometry"):
        default_parameters("voxels", "gamma")


# --- the simulation -------------------------------------------------------------------------------
def test_sample_shape_determinism_and_work_split():
    sim = GflashSimulation(DS2)
    assert isinstance(sim, Generator)
    energies = np.array([2000.0, 20_000.0, 5000.0, 1000.0])
    whole = sim.sample(energies, seed=11)
    assert whole.shape == (4, DS2.n_voxels) and whole.dtype == np.float32
    np.testing.assert_array_equal(whole, sim.sample(energies.reshape(-1, 1), seed=11, batch_size=3))
    parts = [sim.simulate(energies[:1], seed=11), sim.simulate(energies[1:], seed=11, first_index=1)]
    np.testing.assert_array_equal(whole, np.concatenate(parts))
    assert not np.array_equal(whole, sim.sample(energies, seed=12))


@pytest.mark.parametrize(("name", "particle"), [("ds2", "e-"), ("ds1-photons", "gamma")])
def test_simulate_scores_exactly_the_spots_it_draws(name, particle):
    """The compiled scoring pass (polar coordinates, no x/y) gives the bytes of spots() + score_deposits."""
    geometry = Geometry.builtin(name)
    sim = GflashSimulation(geometry, particle)
    tables = ReadoutTables.from_geometry(geometry)
    energies = np.array([1500.0, 40_000.0, 250_000.0])
    expected = np.zeros((energies.size, geometry.n_voxels), dtype=np.float32)
    for i, energy in enumerate(energies):
        s = sim.spots(energy, np.random.default_rng(derive_seed(21, i)))
        expected[i] = score_deposits(tables, s.x, s.y, s.z, s.e)[0]
    expected[expected < geometry.threshold] = 0.0
    np.testing.assert_array_equal(sim.sample(energies, seed=21), expected)


def test_spot_energies_sum_to_the_deposited_energy():
    sim = GflashSimulation(DS2)
    rng = np.random.default_rng(3)
    for energy in (1000.0, 30_000.0):
        spots = sim.spots(energy, rng)
        assert spots.e.size == n_spots(energy, sim.params)
        assert np.all(spots.e > 0) and np.all(spots.z >= -origin(energy, sim.params) * sim.params.x0_mm)  # profile start
        assert spots.e.sum() == pytest.approx(spots.deposited, rel=1e-12)


def test_response_resolution_and_threshold():
    params = GflashParameters.default().with_(energy_scale=0.95, sampling_term=0.1)
    showers = GflashSimulation(DS2, params=params).sample(np.full(150, 20_000.0), seed=5)
    ratio = showers.sum(axis=1, dtype=np.float64) / 20_000.0
    # 1-2% radial leakage below the 0.95 scale; spread close to c / sqrt(20)
    assert 0.92 < ratio.mean() < 0.95
    assert 0.6 * 0.1 / math.sqrt(20) < ratio.std() < 1.4 * 0.1 / math.sqrt(20)
    assert np.all((showers == 0) | (showers >= DS2.threshold))


def test_longitudinal_physics():
    """Mean depth grows by about ln(10) X0 per decade; moving T by 1 X0 moves <t> = alpha T / (alpha - 1) by alpha / (alpha - 1)."""
    z = np.array([np.mean(layer.z_range) for layer in DS2.layers]) / 4.22

    def mean_depth(energy: float, params: GflashParameters) -> float:
        layers = DS2.layer_energies(GflashSimulation(DS2, params=params).sample(np.full(60, energy), seed=2))
        return float((layers.sum(0) * z).sum() / layers.sum())

    base = GflashParameters.default()
    low, high = mean_depth(5000.0, base), mean_depth(50_000.0, base)
    assert high - low == pytest.approx(math.log(10), abs=0.35)
    alpha = math.exp(float(mean_log_shape(np.array([5000.0]), base)[1][0]))
    assert mean_depth(5000.0, base.with_(depth_offset=1.0)) - low == pytest.approx(alpha / (alpha - 1), abs=0.2)


def test_tilt_origin_and_radius_slopes():
    """The tilt multiplies the energy profile by exp(tilt t / <t>); origin_slope moves the spots; radius_slope scales both radii."""
    base = GflashParameters.default()
    tilted = base.with_(profile_tilt=0.8)
    plain, tilt = depth_steps(20_000.0, 5.0, 4.0, base), depth_steps(20_000.0, 5.0, 4.0, tilted)
    n = min(plain.energy.size, tilt.energy.size)
    centre = 4.0 / (3.0 / 5.0)  # alpha / beta of the untilted profile, X0
    ratio = tilt.energy[:n] / plain.energy[:n] / np.exp(0.8 * (np.arange(n) + 0.5) * STEP_X0 / centre)
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)

    moved = base.with_(origin_slope=0.2)
    a, b = (GflashSimulation(DS2, params=p).spots(30_000.0, np.random.default_rng(4)) for p in (base, moved))
    np.testing.assert_allclose(a.z - b.z, 0.2 * math.log(30.0) * base.x0_mm, rtol=1e-9)
    np.testing.assert_array_equal(a.e, b.e)

    tau = np.linspace(0.1, 3.0, 7)
    wider = radial_parameters(tau, 50_000.0, base.with_(radius_slope=0.1))
    np.testing.assert_allclose(wider[:2], radial_parameters(tau, 50_000.0, base)[:2] * 50.0**0.1, rtol=1e-12)


@pytest.mark.parametrize(
    ("name", "particle", "contained"), [("ds1-photons", "photon", 0.7), ("tiny", "e+", 0.35), ("ds3", "e-", 0.8)]
)
def test_any_geometry(name, particle, contained):
    """Visible fraction: the calibrated response is ~0.9 (as the MC); tiny (8 X0 deep, 3 R_M wide) holds about half."""
    geometry = Geometry.builtin(name)
    showers = GflashSimulation(geometry, particle).sample([8000.0, 16_000.0], seed=1)
    assert showers.shape == (2, geometry.n_voxels)
    assert np.all(np.isfinite(showers)) and np.all(showers >= 0)
    assert contained < showers.sum() / 24_000.0 < 1.01


def test_photons_start_deeper_than_electrons():
    energies = np.full(80, 10_000.0)
    depth = {}
    for particle in ("e-", "gamma"):
        layers = DS2.layer_energies(GflashSimulation(DS2, particle).sample(energies, seed=4))
        depth[particle] = (layers.sum(0) * np.arange(45)).sum() / layers.sum()
    assert depth["gamma"] - depth["e-"] == pytest.approx(9 / 7 * 4.22 / 3.4, abs=0.4)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s: s.sample([1000.0, -5.0], seed=1), r"entry 1 is -5.0"),
        (lambda s: s.sample([float("nan")], seed=1), "finite and > 0"),
        (lambda s: s.sample(np.ones((2, 2)), seed=1), r"shape \(N,\) or \(N, 1\)"),
        (lambda s: s.sample([1000.0], seed=1, batch_size=0), "batch_size must be >= 1"),
        (lambda s: GflashSimulation(DS2, "pi+"), "particle 'pi\\+' is not one of"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(GflashParameterError, match=match) as info:
        call(GflashSimulation(DS2))
    assert isinstance(info.value, CalogenError)


# --- calibration ------------------------------------------------------------------------------------
def test_calibration_recovers_known_offsets():
    truth = GflashParameters.default().with_(
        depth_offset=0.8, shape_offset=-0.4, core_radius_scale=1.25, tail_radius_scale=0.85,
        spot_scale=1.6, energy_scale=0.96, sampling_term=0.10,
    )  # fmt: skip
    energies = np.repeat([3000.0, 20_000.0], 150).reshape(-1, 1)
    reference = ShowerData(energies.astype(np.float32), GflashSimulation(DS2, params=truth).sample(energies, seed=1))
    fit = calibrate_gflash(reference, DS2, n_model=64, n_hits=40)
    # depth, shape, origin and tilt trade off (as R_C, R_T and p do), so check the mean depth they produce
    depth_x0 = (np.arange(DS2.n_layers) + 0.5) * 3.4 / 4.22
    for energy in (3000.0, 20_000.0):
        rows = energies[:, 0] == energy
        mean_depth = [
            float((DS2.layer_energies(s).sum(0) * depth_x0).sum() / s.sum())
            for s in (reference.showers[rows], GflashSimulation(DS2, params=fit).sample(np.full(600, energy), seed=9))
        ]
        assert mean_depth[1] == pytest.approx(mean_depth[0], abs=0.2), (energy, mean_depth)
    assert fit.energy_scale == pytest.approx(0.96, rel=0.01)
    assert fit.sampling_term == pytest.approx(0.10, rel=0.15)
    for energy in (3000.0, 20_000.0):  # spot counts, not the (correlated) scale and sampling term
        assert n_spots(energy, fit) == pytest.approx(n_spots(energy, truth), rel=0.12)
    # radial shape: R_C, R_T and p trade off, so check the profile they produce
    for energy in (3000.0, 20_000.0):
        rows = energies[:, 0] == energy
        agreement = profile_agreement(reference.showers[rows], GflashSimulation(DS2, params=fit).sample(energies[rows], seed=9), DS2)
        assert agreement.within(profile=0.12, hits=0.06), agreement
    assert "calibrate_gflash on 300 e- showers" in fit.provenance


def test_calibration_input_errors():
    energies = np.full((20, 1), 5000.0, dtype=np.float32)
    showers = GflashSimulation(DS2).sample(energies, seed=1)
    with pytest.raises(CalibrationError, match="different radial bins"):
        photons = Geometry.builtin("ds1-photons")
        calibrate_gflash(ShowerData(energies, np.zeros((20, photons.n_voxels), np.float32)), photons)
    with pytest.raises(CalibrationError, match="supports e-, e\\+ and gamma references, not 'pi\\+'"):
        calibrate_gflash(ShowerData(energies, showers), DS2, particle="pi+")
    with pytest.raises(CalibrationError, match="at least 10 reference showers"):
        calibrate_gflash(ShowerData(energies[:3], showers[:3]), DS2)
    with pytest.raises(CalibrationError, match="6480"):
        calibrate_gflash(ShowerData(energies, showers[:, :100]), DS2)


def test_profile_agreement_and_radial_energies():
    showers = GflashSimulation(DS2).sample(np.full(30, 4000.0), seed=3)
    same = profile_agreement(showers, showers, DS2)
    assert same.within(profile=0.0, hits=0.0) and same.response == 0.0
    radial = radial_energies(showers, DS2)
    np.testing.assert_allclose(radial.sum(axis=1), showers.sum(axis=1, dtype=np.float64), rtol=1e-6)
    wider = GflashSimulation(DS2, params=GflashParameters.default().with_(core_radius_scale=1.5)).sample(np.full(30, 4000.0), seed=3)
    assert profile_agreement(showers, wider, DS2).radial > 0.05
