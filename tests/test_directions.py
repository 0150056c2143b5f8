"""Incident directions: the readout follows the trajectory, the file records the direction, bad directions are refused."""

from __future__ import annotations

import math
import re

import h5py
import numpy as np
import pytest

from calogen.cli import main
from calogen.geometry import Geometry, Layer
from calogen.io import file_sha256
from calogen.sim.full import FullSimulation
from calogen.sim.gflash import GflashSimulation
from calogen.sim.readout import (
    Incidence,
    IncidenceError,
    readout_arrays,
    theta_from_eta,
)

THETA = math.radians(10.0)
LAYERS = 16  # 3.4 mm readout layers of Par04; the shift at layer 15 (z = 52.7 mm) is 9.3 mm


def _probe() -> Geometry:
    """Fine cylinders (2 mm x 32 alpha bins out to 60 mm) on the first Par04 readout layers."""
    edges = tuple(2.0 * k for k in range(31))
    layers = tuple(Layer(edges, 32, (3.4 * i, 3.4 * (i + 1))) for i in range(LAYERS))
    return Geometry("probe", "electron", 11, layers, threshold=0.0)


def _x_centroids(geometry: Geometry, showers: np.ndarray) -> np.ndarray:
    """Per-layer energy-weighted mean of the voxel x coordinate ``r cos(alpha)``, ``(LAYERS,)`` mm."""
    e = showers.astype(np.float64).sum(axis=0)
    x = geometry.voxel_r * np.cos(geometry.voxel_alpha)
    return np.array([np.sum((e * x)[geometry.voxel_layer == i]) / np.sum(e[geometry.voxel_layer == i]) for i in range(LAYERS)])


def test_eta_convention() -> None:
    assert math.degrees(theta_from_eta(2.0)) == pytest.approx(15.415, abs=1e-3)
    assert Incidence.from_eta(2.0, 1.5708).theta == theta_from_eta(2.0)
    assert Incidence(theta=0.0, phi=2.5).direction() == (0.0, 0.0, 1.0)  # exactly normal, whatever phi


def test_normal_incidence_is_the_default_byte_for_byte() -> None:
    geometry = Geometry.builtin("tiny")
    energies = np.array([1000.0, 3000.0])
    base = FullSimulation(geometry, "e-").simulate(energies, seed=3).showers
    explicit = FullSimulation(geometry, "e-", incidence=Incidence(theta=0.0, phi=-1.0)).simulate(energies, seed=3).showers
    assert explicit.tobytes() == base.tobytes()
    gflash = GflashSimulation(geometry, incidence=Incidence(phi=-1.0)).simulate(energies, seed=3)
    assert gflash.tobytes() == GflashSimulation(geometry).simulate(energies, seed=3).tobytes()


def test_inclined_mc_shower_centre_moves_by_z_tan_theta_but_stays_centred_in_the_readout() -> None:
    geometry = _probe()
    incidence = Incidence(theta=THETA, phi=0.0)
    sim = FullSimulation(geometry, "e-", incidence=incidence)
    energies = np.full(12, 5000.0)
    readout = _x_centroids(geometry, sim.simulate(energies, seed=11).showers)
    sim._readout = readout_arrays(geometry)  # the same showers in the fixed detector frame
    fixed = _x_centroids(geometry, sim.simulate(energies, seed=11).showers)
    shift = 3.4 * (np.arange(LAYERS) + 0.5) * math.tan(THETA)  # up to 9.3 mm
    # a plane cuts an inclined shower obliquely (its far side is deeper along the axis), which moves the centre
    # by a fraction of a mm: towards the far side before the maximum, back after it
    assert np.abs(readout[2:]).max() < 1.0
    np.testing.assert_allclose(fixed - readout, shift, atol=1.0)  # centres from 2 mm x 32 bins


def test_inclined_gflash_spots_follow_the_axis_and_the_readout_centres_them() -> None:
    geometry = _probe()
    sim = GflashSimulation(geometry, incidence=Incidence(theta=THETA, phi=math.pi / 2))
    spots = sim.spots(20_000.0, np.random.default_rng(1))
    for z_lo in (10.0, 25.0, 40.0):
        inside = (spots.z >= z_lo) & (spots.z < z_lo + 3.4)
        mean_y = np.average(spots.y[inside], weights=spots.e[inside])
        assert mean_y == pytest.approx((z_lo + 1.7) * math.tan(THETA), abs=1.2)  # oblique cut: see above
        assert abs(np.average(spots.x[inside], weights=spots.e[inside])) < 1.2
    showers = sim.simulate(np.full(10, 20_000.0), seed=2)
    e = showers.astype(np.float64).sum(axis=0)
    y = geometry.voxel_r * np.sin(geometry.voxel_alpha)
    assert abs(np.sum(e * y) / e.sum()) < 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"theta": math.pi / 2}, "theta must lie in"), ({"theta": -0.1}, "theta must lie in"), ({"phi": 7.0}, "phi must lie in"),
     ({"entry": (math.nan, 0.0)}, "entry must be two finite numbers")],
)  # fmt: skip
def test_incidence_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(IncidenceError, match=match):
        Incidence(**kwargs)


def _simulate(tmp_path, name: str, *extra: str) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    out = tmp_path / name
    argv = ["simulate", "--engine", "gflash", "--geometry", "tiny", "--energy", "10GeV", "--n", "3", "--seed", "4"]
    return main([*argv, "-o", str(out), "--no-progress", *extra]), str(out)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--theta", "80"], "--theta must lie in \\[0, 80\\) degrees"),
        (["--theta", "30", "--max-theta", "20"], "--theta must lie in \\[0, 20\\)"),
        (["--eta", "0.1"], "--eta must be > 0.1754"),
        (["--eta", "-2"], "--eta must be >"),
        (["--eta", "2", "--phi", "7"], "--phi must lie in"),
        (["--entry", "nan", "0"], "entry must be two finite numbers"),
    ],
)
def test_cli_refuses_directions_out_of_range(tmp_path, capsys, extra: list, match: str) -> None:
    code, _ = _simulate(tmp_path, "x.h5", *extra)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert re.search(match, err)
    assert not (tmp_path / "x.h5").exists()


def test_cli_refuses_eta_and_theta_together(tmp_path, capsys) -> None:
    code, _ = _simulate(tmp_path, "x.h5", "--eta", "2", "--theta", "10")
    assert code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_cli_records_the_direction_and_is_reproducible(tmp_path) -> None:
    assert _simulate(tmp_path, "normal.h5")[0] == 0
    assert _simulate(tmp_path, "theta0.h5", "--theta", "0")[0] == 0
    assert file_sha256(tmp_path / "normal.h5") == file_sha256(tmp_path / "theta0.h5")  # normal incidence: today's file
    with h5py.File(tmp_path / "normal.h5") as f:
        assert "incident_directions" not in f and "incident_theta" not in f.attrs
    for name in ("a.h5", "b.h5"):
        assert _simulate(tmp_path, name, "--eta", "2.0", "--phi", "1.5708")[0] == 0
    assert file_sha256(tmp_path / "a.h5") == file_sha256(tmp_path / "b.h5")
    with h5py.File(tmp_path / "a.h5") as f:
        np.testing.assert_allclose(f["incident_directions"][:], [[theta_from_eta(2.0), 1.5708]] * 3, rtol=1e-6)
        assert f.attrs["incident_theta"] == pytest.approx(theta_from_eta(2.0))
        assert f.attrs["incident_phi"] == pytest.approx(1.5708)
        inclined = f["showers"][:]
    with h5py.File(tmp_path / "normal.h5") as f:
        assert not np.array_equal(inclined, f["showers"][:])
