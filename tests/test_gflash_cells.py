"""GFLASH calibration on cell readouts: rings, shell acceptance, photon references, the command on hgcal-like."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calogen.cell_geometry import CellGeometry, CellLayer
from calogen.cli import main
from calogen.io import ShowerData, read_showers
from calogen.sim.calibrate import CalibrationError, calibrate_gflash
from calogen.sim.gflash import GflashSimulation
from calogen.sim.gflash_cells import ring_acceptance, ring_energies, shell_edges
from calogen.sim.gflash_params import GflashParameters, hgcal_like_parameters
from calogen.sim.shower_profiles import profile_agreement

HGCAL = CellGeometry.builtin("hgcal-like")


def test_ring_energies_and_acceptance():
    g = CellGeometry.builtin("tiny-hex")  # 2 rings of 12 mm hexagons: inradius 6 mm, circumradius 6.93 mm
    showers = np.random.default_rng(0).random((4, g.n_voxels)).astype(np.float32)
    rings = ring_energies(showers, g)
    np.testing.assert_allclose(rings.sum(axis=1), showers.sum(axis=1, dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(rings[:, 0], showers[:, g.cell_ring == 0].sum(axis=1), rtol=1e-6)
    edges = shell_edges(g)
    a = ring_acceptance(g, edges)
    inner, middle = edges[1:] <= 6.0, (edges[:-1] >= 7.0) & (edges[1:] <= 13.8)  # 13.86: the 7-cell outline's nearest vertex
    np.testing.assert_allclose(a[inner], np.tile([1.0, 0.0, 0.0], (inner.sum(), 1)))  # inside the central hexagon
    assert middle.sum() == 2 and np.allclose(a[middle, 1], 1.0)  # between the central cell and ring 2
    assert a.sum(axis=1)[-1] == 0.0 and (a.sum(axis=1) <= 1.0 + 1e-12).all()  # the last shell lies outside


def test_calibration_on_hgcal_like_photons_recovers_the_profile():
    truth = hgcal_like_parameters().with_(depth_offset=1.0, core_radius_scale=1.3, spot_scale=1.5, energy_scale=0.97)
    energies = np.full((120, 1), 20_000.0, dtype=np.float32)
    reference = GflashSimulation(HGCAL, "gamma", truth).sample(energies, seed=1)
    fit = calibrate_gflash(ShowerData(energies, reference), HGCAL, particle="gamma", n_model=32, n_hits=24)
    assert fit.core_radius_scale == pytest.approx(1.3, rel=0.1)
    assert fit.energy_scale == pytest.approx(0.97, rel=0.02)
    many = np.full(400, 20_000.0)
    before = profile_agreement(reference, GflashSimulation(HGCAL, "gamma", hgcal_like_parameters()).sample(many, seed=5), HGCAL)
    after = profile_agreement(reference, GflashSimulation(HGCAL, "gamma", fit).sample(many, seed=5), HGCAL)
    assert before.longitudinal > 0.3 and before.hits > 0.15  # the uncalibrated model is far off
    assert after.within(profile=0.12, hits=0.05), after  # the truth itself deviates by 6% (120 reference showers)
    assert "120 gamma showers" in fit.provenance and "hgcal-like" in fit.provenance


def test_calibration_needs_lattice_cells():
    layer = CellLayer(np.array([0.0, 20.0]), np.array([0.0, 0.0]), np.zeros(2), np.array([0, 1]), 0.0, (0.0, 7.8), np.full(2, 12.0))
    g = CellGeometry("free", (layer,))
    energies = np.full((20, 1), 5000.0, dtype=np.float32)
    with pytest.raises(CalibrationError, match="hexagonal-lattice"):
        calibrate_gflash(ShowerData(energies, np.ones((20, 2), np.float32)), g, particle="gamma")


def test_calibrate_gflash_command_reads_the_incidence(tmp_path, capsys):
    ref, published = tmp_path / "ref.h5", tmp_path / "published.json"
    hgcal_like_parameters().save(published)  # uncalibrated: the packaged set is the default on cells
    simulate = ["simulate", "--engine", "gflash", "--geometry", "hgcal-like", "--particle", "gamma", "--eta", "2.0",
                "--gflash-params", str(published)]  # fmt: skip
    assert main([*simulate, "--phi", "1.5708", "--energy", "10GeV", "--n", "40", "--seed", "2", "-o", str(ref), "--no-progress"]) == 0
    argv = ["calibrate-gflash", str(ref), "--geometry", "hgcal-like", "--particle", "gamma", "--n-model=16", "--n-hits=8"]
    assert main([*argv, "-o", str(tmp_path / "p.json")]) == 0
    assert "incidence theta 15.41 deg" in capsys.readouterr().out
    fitted = GflashParameters.load(tmp_path / "p.json")
    assert f"theta {2 * math.atan(math.exp(-2.0)):.4f} rad" in fitted.provenance
    assert fitted.x0_mm == pytest.approx(hgcal_like_parameters().x0_mm)  # started from the hgcal-like medium
    # the reference is GFLASH itself (core scale 1); shells centred on the central cell instead of on each layer's
    # crossing, unprojected, fitted 1.8 here
    assert 0.6 < fitted.core_radius_scale < 1.4
    assert main([*argv, "--particle", "pi+", "-o", str(tmp_path / "q.json")]) == 2


def test_packaged_hgcal_photon_set_is_the_default_on_cells(tmp_path):
    packaged = GflashParameters.packaged("hgcal-like-gamma")  # loads and validates (from_dict)
    published = hgcal_like_parameters()
    medium = ("x0_mm", "critical_energy_mev", "moliere_radius_mm", "z_eff", "sampling_frequency", "e_hat")
    assert all(getattr(packaged, f) == pytest.approx(getattr(published, f)) for f in medium)  # the HGCal-like stack
    assert packaged.depth_offset != 0.0 and packaged.spot_scale != 1.0 and packaged.core_radius_scale != 1.0  # calibrated
    assert all(s in packaged.provenance for s in ("calibrate-gflash", "--seed 16", "--n 1600", "2026-12-06", "commit"))
    assert GflashSimulation(HGCAL, "gamma").params == packaged
    assert GflashSimulation(CellGeometry.builtin("tiny-hex"), "photon").params == packaged
    out = tmp_path / "g.h5"
    argv = ["simulate", "--engine", "gflash", "--geometry", "hgcal-like", "--particle", "gamma", "--energy", "20GeV",
            "--n", "3", "--seed", "4", "-o", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    showers = read_showers(out).showers
    energies = np.full(3, 20_000.0)
    np.testing.assert_array_equal(showers, GflashSimulation(HGCAL, "gamma", packaged).sample(energies, seed=4))
    assert not np.array_equal(showers, GflashSimulation(HGCAL, "gamma", published).sample(energies, seed=4))


def test_packaged_hgcal_electron_set_is_the_default_for_e_on_cells(tmp_path):
    packaged = GflashParameters.packaged("hgcal-like-electron")  # loads and validates (from_dict)
    published, photon = hgcal_like_parameters(), GflashParameters.packaged("hgcal-like-gamma")
    assert packaged.x0_mm == pytest.approx(published.x0_mm) and packaged.z_eff == pytest.approx(published.z_eff)
    assert packaged not in (published, photon)  # calibrated, to electrons
    provenance = ("calibrate-gflash", "--particle e-", "--seed 40", "--n 1600", "2026-12-06", "commit")
    assert all(s in packaged.provenance for s in provenance)
    assert GflashSimulation(HGCAL, "e-").params == GflashSimulation(HGCAL, "positron").params == packaged
    out = tmp_path / "e.h5"
    argv = ["simulate", "--engine", "gflash", "--geometry", "hgcal-like", "--particle", "e-", "--energy", "20GeV",
            "--n", "3", "--seed", "4", "-o", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    energies = np.full(3, 20_000.0)
    np.testing.assert_array_equal(read_showers(out).showers, GflashSimulation(HGCAL, "e-", packaged).sample(energies, seed=4))
