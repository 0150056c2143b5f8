"""The occupancy stage on a cell geometry: its own hit threshold, hexagonal rings, and hits moved toward the data's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _model_data import one_thread  # noqa: F401

from calogen.cell_geometry import CellGeometry
from calogen.cli import main
from calogen.geometry import Geometry
from calogen.io import write_showers
from calogen.models.generator import load
from calogen.models.occupancy import Occupancy, OccupancyConfig, OccupancyError
from calogen.models.rescale import group_totals
from calogen.models.voxel_groups import energy_groups
from calogen.train.occupancy import hit_threshold

pytestmark = pytest.mark.usefixtures("one_thread")

HEX = CellGeometry.builtin("tiny-hex")


def sparse_showers(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` toy showers ``(n, voxels)`` MeV that hit few cells (each kept with probability ``exp(-ring / 0.8)``)
    and their energies ``(n, 1)``, log-uniform in 1-100 GeV."""
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(np.log(1e3), np.log(1e5), (n, 1)))
    depth = 1.0 + HEX.voxel_layer
    w = depth * np.exp(-depth / 2 - HEX.cell_ring / 0.7) * rng.gamma(2.0, 0.5, (n, HEX.n_voxels))
    w = np.where(rng.random((n, HEX.n_voxels)) < np.exp(-HEX.cell_ring / 0.8), w, 0.0)
    return e.astype(np.float32), (e * w / w.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def cell_occ(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A tiny cell model (2 training steps) in ``run`` and a copy with a fitted occupancy stage in ``occ``; the training showers."""
    root = tmp_path_factory.mktemp("cell-occ")
    e, v = sparse_showers(400, seed=1)
    write_showers(root / "train.h5", e, v)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--data", str(root / "train.h5"), "--geometry", "tiny-hex", "--preset", "tiny",
                     "--out", str(root / "run"), "--max-steps", "2", "--no-progress"]) == 0  # fmt: skip
        assert main(["fit-occupancy", str(root / "run"), "--data", str(root / "train.h5"), "--steps", "150",
                     "--spectrum-showers", "50", "--nfe", "2", "--floors", "0", "5", "20", "--out", str(root / "occ")]) == 0  # fmt: skip
    finally:
        torch.set_num_threads(before)
    return root, v


def test_fitted_stage_takes_hits_to_the_training_data_and_keeps_ring_energies(cell_occ):
    root, v = cell_occ
    plain, occ = load(root / "run"), load(root / "occ")
    assert plain.occupancy is None and occ.occupancy is not None
    t = occ.occupancy.threshold
    assert t == pytest.approx(np.quantile(v[v > 0].astype(np.float64), 0.01)) and t > 0  # the geometry has no threshold
    assert occ.occupancy.config.max_count == 12  # the largest hexagonal ring of tiny-hex
    assert occ.occupancy.config.centre is False  # new fits tilt ring centres on cylindrical geometries only
    e = np.geomspace(1.5e3, 8e4, 200)
    a, b = plain.sample(e, seed=3), occ.sample(e, seed=3)
    data, hits_plain, hits_occ = (v > 0).sum(1).mean(), (a > 0).sum(1).mean(), (b > 0).sum(1).mean()
    assert hits_plain > 2 * data  # the shape network alone spreads every ring over its cells
    assert abs(hits_occ - data) < 0.2 * data
    groups = torch.from_numpy(energy_groups(HEX, "rings"))
    rings_a, rings_b = (group_totals(torch.from_numpy(x).double(), groups, int(groups.max()) + 1) for x in (a, b))
    kept = rings_a >= t  # rings below the stage's threshold are emptied and their energy shared by the others
    torch.testing.assert_close(rings_b.sum(1), rings_a.sum(1), rtol=1e-5, atol=1e-6)
    assert torch.all((rings_b > 0) <= kept)
    assert ((b == 0) | (b >= t * (1 - 1e-6))).all()
    np.testing.assert_array_equal(b, occ.sample(e, seed=3))


def test_stage_needs_a_positive_threshold_on_a_cell_geometry():
    with pytest.raises(OccupancyError, match="positive threshold"):
        Occupancy(HEX, OccupancyConfig())
    with pytest.raises(OccupancyError, match="threshold"):
        OccupancyConfig(threshold=-1.0)
    occ = Occupancy(HEX, OccupancyConfig(width=8, depth=1, max_count=12, threshold=2.5))
    assert occ.threshold == 2.5 and occ.n_groups == 3 * HEX.n_layers and occ.sizes.tolist()[:3] == [1, 6, 12]


def test_hit_threshold_is_the_quantile_only_without_a_readout_threshold():
    showers = np.array([[0.0, 1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    assert hit_threshold(HEX, showers, 0.5) == 2.5
    ds2_like = Geometry.builtin("tiny")
    assert ds2_like.threshold > 0 and hit_threshold(ds2_like, showers, 0.5) == 0.0


def test_bad_floors_are_a_one_line_error(capsys):
    assert main(["fit-occupancy", "run", "--data", "train.h5", "--floors", "-1"]) == 2
    err = capsys.readouterr().err
    assert "expected a finite energy >= 0 MeV" in err and len(err.strip().splitlines()) == 1
