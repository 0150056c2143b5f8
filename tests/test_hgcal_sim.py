"""The HGCal-like stack and scoring into cell geometries, for the detailed MC and GFLASH."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from calogen.cell_geometry import CellGeometry, cell_voxel
from calogen.cli import main
from calogen.sim.detector import LayerStack
from calogen.sim.full import FullSimulation
from calogen.sim.gflash import GflashSimulation
from calogen.sim.gflash_params import hgcal_like_parameters
from calogen.sim.physics import photoelectric
from calogen.sim.readout import Incidence, readout_arrays

TINY_HEX = CellGeometry.builtin("tiny-hex")
HGCAL = CellGeometry.builtin("hgcal-like")
ETA2 = Incidence.from_eta(2.0, math.pi / 2)
needs_pb_cu = pytest.mark.skipif(
    not {"Pb", "Cu"} <= set(photoelectric.EDGES), reason="no Pb/Cu photoabsorption tables in sim/physics/photoelectric.py"
)


def test_hgcal_like_stack_from_the_material_table() -> None:
    stack = LayerStack.hgcal_like()
    assert stack.n_slabs == 78 and stack.depth == pytest.approx(202.8)
    x0 = stack.radiation_length()
    assert 7.8 / x0 == pytest.approx(1.014, abs=1e-3)  # 4.5/5.612 + 3.0/14.36 + 0.3/93.7
    assert stack.depth / x0 == pytest.approx(26.36, abs=0.01)
    assert stack.moliere_radius() == pytest.approx(16.3, abs=0.1)
    assert stack.critical_energy() == pytest.approx(10.0, abs=0.1)
    params = hgcal_like_parameters()
    assert (params.x0_mm, params.moliere_radius_mm) == (pytest.approx(x0), pytest.approx(stack.moliere_radius()))


@pytest.mark.parametrize(("geometry", "n_pairs"), [(TINY_HEX, 13), (HGCAL, 119)])
def test_cells_hold_the_silicon_deposit(geometry: CellGeometry, n_pairs: int) -> None:
    """Every silicon deposit lands in a cell or in the outside-readout account (W/Si slabs behind the cells)."""
    sim = FullSimulation(geometry, "e-", stack=LayerStack.par04(n_pairs=n_pairs), scale=1.0, incidence=ETA2)
    result = sim.simulate(np.array([2000.0, 500.0]), seed=3)
    in_cells = result.showers.astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(in_cells + result.outside_readout, result.deposit("Si"), rtol=1e-5)
    assert (in_cells > 0.5 * result.deposit("Si")).all()


def test_tiny_hex_run_is_reproducible() -> None:
    sim = FullSimulation(TINY_HEX, "gamma", stack=LayerStack.par04(n_pairs=13))
    energies = np.array([1500.0, 800.0, 3000.0])
    whole = sim.simulate(energies, seed=5).showers
    assert whole.shape == (3, 57) and whole.sum() > 0
    assert sim.simulate(energies, seed=5).showers.tobytes() == whole.tobytes()
    assert sim.simulate(energies[1:], seed=5, first_index=1).showers.tobytes() == whole[1:].tobytes()
    assert not np.array_equal(sim.simulate(energies, seed=6).showers, whole)


def test_inclined_readout_sits_on_the_central_cell_under_the_trajectory() -> None:
    ro = readout_arrays(HGCAL, ETA2)
    x, y = ETA2.crossing(0.5 * (ro.z_lo + ro.z_hi))
    assert np.abs(x).max() < 1e-9 and y[-1] == pytest.approx(198.9 * math.tan(ETA2.theta))
    pitch = HGCAL.layers[0].pitch
    assert (np.hypot(ro.cx - x, ro.cy - y) <= pitch / math.sqrt(3) + 1e-9).all()
    t = HGCAL.lookup_tables()
    for row in range(HGCAL.n_layers):  # the centre is the centre of the cell holding the crossing
        v = cell_voxel(t.pitch, t.table, t.half, row, ro.cx[row], ro.cy[row])
        assert (HGCAL.cell_x[v], HGCAL.cell_y[v]) == (pytest.approx(ro.cx[row]), pytest.approx(ro.cy[row]))


def test_gflash_scores_into_cells() -> None:
    sim = GflashSimulation(HGCAL, "gamma", incidence=ETA2)
    showers = sim.simulate(np.full(20, 20_000.0), seed=4)
    assert showers.shape == (20, HGCAL.n_voxels)
    assert 0.8 < showers.sum(axis=1).mean() / 20_000.0 < 1.05
    np.testing.assert_array_equal(showers, sim.simulate(np.full(20, 20_000.0), seed=4))
    layers = HGCAL.layer_energies(showers).mean(axis=0)
    assert 3 < int(np.argmax(layers)) < 15
    ro = readout_arrays(HGCAL, ETA2)
    _, crossing_y = ETA2.crossing(0.5 * (ro.z_lo + ro.z_hi))
    rows = range(3, 15)
    centre_y = np.array([np.average(HGCAL.cell_y[HGCAL.layer_slice(i)], weights=showers[:, HGCAL.layer_slice(i)].sum(axis=0)) for i in rows])
    # the central cell's centre lies up to pitch / sqrt(3) from the trajectory and the shower stays on the trajectory:
    # the centre of energy (from 12 mm cells, so pulled towards the central cell) follows that offset layer by layer
    offset = (crossing_y - ro.cy)[3:15]
    assert np.abs(centre_y).max() < HGCAL.layers[0].pitch / math.sqrt(3)
    assert np.corrcoef(centre_y, offset)[0, 1] > 0.85


def test_cli_simulates_hgcal_like_gflash_at_eta_2(tmp_path) -> None:
    out = tmp_path / "h.h5"
    argv = ["simulate", "--engine", "gflash", "--geometry", "hgcal-like", "--particle", "gamma", "--eta", "2.0",
            "--phi", "1.5708", "--energy", "20GeV", "--n", "2", "--seed", "1", "-o", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    with h5py.File(out) as f:
        assert f["showers"].shape == (2, HGCAL.n_voxels) and f.attrs["geometry"] == "hgcal-like"
        assert f["incident_directions"].shape == (2, 2)


@needs_pb_cu
def test_full_mc_on_the_hgcal_like_stack() -> None:
    result = FullSimulation(HGCAL, "gamma", incidence=ETA2, scale=1.0).simulate(np.full(4, 10_000.0), seed=2)
    fraction = result.deposit("Si") / result.material_deposits.sum(axis=1)
    assert (0.005 < fraction).all() and (fraction < 0.02).all()
    np.testing.assert_allclose(result.showers.astype(np.float64).sum(axis=1) + result.outside_readout, result.deposit("Si"), rtol=1e-5)
    assert np.abs(result.balance()).max() < 1e-9
