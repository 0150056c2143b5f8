"""The flow model on a cell geometry: the cells <-> grid map, training, generation and the model directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _model_data import one_thread  # noqa: F401

from calogen.cell_geometry import CellGeometry
from calogen.errors import CalogenError
from calogen.io import write_showers
from calogen.models.cell_map import CellGridMap, cell_overlap_matrix, grid_size
from calogen.models.generator import load
from calogen.models.pair import ModelPair
from calogen.models.preprocess import Preprocessor
from calogen.models.voxel_groups import energy_groups, layer_vector, radial_slots, radial_vector
from calogen.train.config import PRESETS
from calogen.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")


def cell_showers(geometry: CellGeometry, n: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` toy showers ``(n, voxels)`` MeV (exponential in the distance from the central cell) and energies ``(n, 1)``."""
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(np.log(1e3), np.log(1e5), (n, 1)))
    r = np.hypot(geometry.cell_x, geometry.cell_y)
    depth = 1.0 + geometry.voxel_layer
    w = depth * np.exp(-depth / 2) * np.exp(-r / rng.uniform(6, 12, (n, 1))) * rng.gamma(4.0, 0.25, (n, geometry.n_voxels))
    return e.astype(np.float32), (e * w / w.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_hex() -> CellGeometry:
    return CellGeometry.builtin("tiny-hex")


def test_overlap_encoder_shares_every_cell_and_decoder_inverts_it(tiny_hex):
    n_a, n_r = grid_size(tiny_hex)
    enc = cell_overlap_matrix(tiny_hex.layers[0], n_a, n_r, 12.0)
    np.testing.assert_allclose(enc.sum(axis=0), 1.0)
    by_bin = enc.reshape(n_a, n_r, -1)
    inner = np.pi / 4 / (np.sqrt(3) / 2)  # area of the r < p/2 disc over the hexagon's: the rest is in its corners
    assert by_bin[:, 0, 0].sum() == pytest.approx(inner, abs=0.01)
    np.testing.assert_allclose(by_bin[:, 0, 0], inner / n_a, rtol=0.05)  # spread evenly over alpha (sampling error)
    assert by_bin[:, 0, 1:].sum() == 0  # only the central cell reaches the innermost bin
    grid_map = CellGridMap(tiny_hex)
    x = torch.rand(3, tiny_hex.n_voxels)
    torch.testing.assert_close(grid_map.decode(grid_map.encode(x)), x, atol=1e-4, rtol=0)


def test_rings_of_cells_are_the_radial_groups(tiny_hex):
    rings = energy_groups(tiny_hex, "rings")
    assert rings.max() + 1 == 3 * tiny_hex.n_layers
    np.testing.assert_array_equal(rings[:19], tiny_hex.layers[0].ring)
    assert radial_slots(tiny_hex)[1] == 3


def test_loss_on_a_fixed_batch_decreases_and_the_cell_map_learns(tiny_hex):
    e, v = cell_showers(tiny_hex, 64, seed=0)
    config = PRESETS["tiny"].model
    pre = Preprocessor.fit(tiny_hex, e, v, radial=True)
    torch.manual_seed(0)
    pair = ModelPair(tiny_hex, config, pre.layer_dim)
    te = torch.from_numpy(e.astype(np.float64))
    fractions, mask = radial_vector(tiny_hex, v)
    tensors = [
        pre.condition(te), pre.layers_forward(torch.from_numpy(layer_vector(tiny_hex, v)), te),
        pre.radial_forward(torch.from_numpy(fractions), torch.from_numpy(mask)), pre.voxels_forward(torch.from_numpy(v.astype(np.float64)), te),
    ]  # fmt: skip
    tensors = [t.float() for t in tensors]

    def loss() -> torch.Tensor:
        return sum(x.mean() for x in pair(*tensors, torch.Generator().manual_seed(1)))  # type: ignore[return-value]

    encoder = pair.shape.net.grid.encoders[0].detach().clone()
    opt = torch.optim.Adam(pair.parameters(), lr=3e-3)
    with torch.no_grad():
        before = float(loss())
    for _ in range(30):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        assert float(loss()) < 0.9 * before
    assert not torch.equal(pair.shape.net.grid.encoders[0].detach(), encoder)  # trained end to end


def test_train_generate_reload_same_bytes(tmp_path, tiny_hex):
    e, v = cell_showers(tiny_hex, 320, seed=1)
    write_showers(tmp_path / "cells.h5", e, v)
    train(tmp_path / "cells.h5", "tiny-hex", "tiny", tmp_path / "model", max_steps=10)
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    assert meta["geometry"]["format"] == "calogen-cell-geometry"
    model = load(tmp_path / "model")
    assert isinstance(model.geometry, CellGeometry) and model.geometry.to_dict() == tiny_hex.to_dict()
    energies = np.array([2e3, 2e4, 8e4])
    showers = model.sample(energies, seed=3)
    assert showers.shape == (3, tiny_hex.n_voxels) and (showers >= 0).all()
    np.testing.assert_allclose(showers.sum(axis=1), energies, rtol=0.5)  # a toy model: the deposits' scale, not their value
    assert load(tmp_path / "model").sample(energies, seed=3).tobytes() == showers.tobytes()


def test_file_and_cell_geometry_disagree(tmp_path, tiny_hex):
    e, v = cell_showers(tiny_hex, 40, seed=2)
    write_showers(tmp_path / "short.h5", e, v[:, :-1])
    with pytest.raises(CalogenError, match="voxels"):
        train(tmp_path / "short.h5", "tiny-hex", "tiny", tmp_path / "model", max_steps=2)


def test_damaged_cell_geometry_in_config_is_refused(tmp_path, tiny_hex):
    e, v = cell_showers(tiny_hex, 320, seed=1)
    write_showers(tmp_path / "cells.h5", e, v)
    train(tmp_path / "cells.h5", tiny_hex, "tiny", tmp_path / "model", max_steps=1)
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    meta["geometry"]["layers"][0]["x"] = meta["geometry"]["layers"][0]["x"][:-1]
    (tmp_path / "model" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CalogenError, match="cell geometry in config.json"):
        load(tmp_path / "model")
