"""GLaM for irregular (dataset 1) binnings: overlap encoder, pseudo-inverse decoder, a model that trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _model_data import one_thread, toy_showers  # noqa: F401

from calogen.geometry import Geometry, Layer
from calogen.io import write_showers
from calogen.models import load
from calogen.models.glam import GridMap, overlap_matrix
from calogen.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", ["ds1-photons", "ds1-pions"])
def test_encoder_columns_sum_to_one_and_decoder_inverts(name):
    geometry = Geometry.builtin(name)
    grid = GridMap(geometry)
    assert not grid.regular and grid.grid_shape[0] == len(geometry.nonempty_layers)
    for enc, dec in zip(grid.encoders, grid.decoders, strict=True):
        np.testing.assert_allclose(enc.detach().sum(0).numpy(), 1.0, rtol=1e-6)
        assert (enc >= 0).all()
        torch.testing.assert_close(dec @ enc, torch.eye(enc.shape[1]), atol=1e-4, rtol=0)
    x = torch.randn(2, geometry.n_voxels)
    torch.testing.assert_close(grid.decode(grid.encode(x)), x, atol=1e-4, rtol=0)


def test_overlap_by_hand():
    # one cell r in [0, 2], alpha = full circle, on a grid with r edges 0, 1, 2 and 4 alpha bins
    enc = overlap_matrix(Layer((0.0, 2.0), 1, (0.0, 1.0)), np.array([0.0, 1.0, 2.0]), 4)
    np.testing.assert_allclose(enc[:, 0], [0.25 / 4, 0.75 / 4] * 4)  # annulus areas 1 : 3, alpha spread evenly


def test_regular_geometry_is_a_reshape():
    grid = GridMap(Geometry.builtin("tiny"))
    assert grid.regular and len(list(grid.parameters())) == 0
    x = torch.arange(240.0).reshape(2, 120)
    assert grid.encode(x).shape == (2, 1, 5, 6, 4)
    assert torch.equal(grid.decode(grid.encode(x)), x)


def test_ds1_model_trains_and_generates(tmp_path):
    geometry = Geometry.builtin("ds1-photons")
    energies, showers = toy_showers(geometry, 80, seed=5)
    write_showers(tmp_path / "ds1.h5", energies, showers)
    result = train(tmp_path / "ds1.h5", geometry, "tiny", tmp_path / "run", max_steps=2)
    assert result.steps == 2
    model = load(tmp_path / "run")
    trained = load(tmp_path / "run", weights="raw").pair.shape.net.grid.encoders[1]
    assert not torch.allclose(trained, GridMap(geometry).encoders[1])  # the maps are learned end to end
    out = model.sample(energies[:3, 0], seed=0, nfe=2, sampler="euler")
    assert out.shape == (3, 368) and out.dtype == np.float32 and np.isfinite(out).all() and (out >= 0).all()
