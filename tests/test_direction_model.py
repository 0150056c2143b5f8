"""Direction conditioning: a model trained on showers whose centre moves with the incident direction follows it."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
from _model_data import one_thread, toy_showers  # noqa: F401

from calogen.cell_geometry import CellGeometry
from calogen.cli import main
from calogen.errors import CalogenError
from calogen.geometry import Geometry
from calogen.io import write_showers
from calogen.models.generator import load
from calogen.train.config import Preset
from calogen.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")

GEOMETRY = CellGeometry.builtin("tiny-hex")
THETA = 0.5
"""Polar angle (rad) the checks generate at: the last layer's centre then moves by about 11 mm (0.9 cells)."""


def inclined_showers(n: int, *, seed: int, direction: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energies ``(n, 1)``, showers ``(n, voxels)`` and directions ``(n, 2)``: each layer's profile centred on the
    straight track ``(x, y) = z tan(theta) (cos phi, sin phi)``, theta uniform in [0, 0.6] rad, phi in [-pi, pi]
    (or all at ``direction``)."""
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(np.log(1e3), np.log(1e5), (n, 1)))
    d = np.stack([rng.uniform(0, 0.6, n), rng.uniform(-math.pi, math.pi, n)], axis=1)
    if direction is not None:
        d[:] = direction
    z = np.array([0.5 * sum(GEOMETRY.layers[i].z_range) for i in GEOMETRY.voxel_layer])
    x0 = z * np.tan(d[:, :1]) * np.cos(d[:, 1:])
    y0 = z * np.tan(d[:, :1]) * np.sin(d[:, 1:])
    w = np.exp(-np.hypot(GEOMETRY.cell_x - x0, GEOMETRY.cell_y - y0) / 8.0) * rng.gamma(8.0, 0.125, (n, GEOMETRY.n_voxels))
    return e.astype(np.float32), (e * w / w.sum(axis=1, keepdims=True)).astype(np.float32), d.astype(np.float32)


def last_layer_x(showers: np.ndarray) -> float:
    """Mean x centre of energy (mm) of the last layer."""
    sl = GEOMETRY.layer_slice(GEOMETRY.n_layers - 1)
    layer = showers[:, sl].astype(np.float64)
    return float(np.mean(layer @ GEOMETRY.cell_x[sl] / np.maximum(layer.sum(axis=1), 1e-12)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("direction")
    e, v, d = inclined_showers(1200, seed=0)
    write_showers(root / "train.h5", e, v, directions=d)
    preset = Preset.from_dict("tiny-directions", {"model": {"directions": True}, "train": {"max_steps": 300, "eval_every": 100,
                              "checkpoint_every": 300}}, base=Preset.resolve("tiny"))  # fmt: skip
    train(root / "train.h5", GEOMETRY, preset, root / "model")
    return root


def test_generated_centre_follows_the_direction(trained):
    model = load(trained / "model")
    assert model.config.directions and model.default_direction == (0.0, 0.0)  # mixed directions: normal incidence
    energies = np.full(200, 1e4)
    along = last_layer_x(model.sample(energies, seed=1, directions=np.array([THETA, 0.0])))
    against = last_layer_x(model.sample(energies, seed=1, directions=np.array([THETA, math.pi])))
    normal = last_layer_x(model.sample(energies, seed=1))
    mc = last_layer_x(inclined_showers(2000, seed=9, direction=(THETA, 0.0))[1]) - last_layer_x(inclined_showers(2000, seed=9, direction=(THETA, math.pi))[1])
    print(f"last-layer x centre: along {along:.2f} mm, against {against:.2f} mm, normal {normal:.2f} mm; MC along - against {mc:.2f} mm")
    assert mc > 10  # the data: the centre moves by about one cell
    assert along - against > 0.5 * mc  # the model moves the shower with phi, by most of the MC's shift
    assert abs(normal) < 0.1 * mc  # and keeps it centred at normal incidence


def test_directions_per_shower_and_range(trained):
    model = load(trained / "model")
    d = np.array([[THETA, 0.0], [THETA, math.pi]])
    both = model.sample(np.full(2, 1e4), seed=2, directions=d)
    assert both.tobytes() == model.sample(np.full(2, 1e4), seed=2, directions=d).tobytes()
    one = model.sample(np.full(1, 1e4), seed=2, directions=np.array([THETA, 0.0]))  # one (2,) pair for one shower
    assert one.tobytes() == model.sample(np.full(1, 1e4), seed=2, directions=d[:1]).tobytes()
    with pytest.raises(CalogenError, match="out of range"):
        model.sample(np.full(2, 1e4), seed=2, directions=np.array([2.0, 0.0]))
    with pytest.raises(CalogenError, match="one per shower"):
        model.sample(np.full(2, 1e4), seed=2, directions=np.zeros((3, 2)))


def test_model_without_direction_conditioning_and_old_directories(trained, tmp_path):
    e, v, _ = inclined_showers(320, seed=3)
    write_showers(tmp_path / "fixed.h5", e, v, directions=np.tile(np.float32([0.2, 1.0]), (len(e), 1)))
    train(tmp_path / "fixed.h5", GEOMETRY, "tiny", tmp_path / "model", max_steps=1)
    model = load(tmp_path / "model")
    assert not model.config.directions and model.default_direction == pytest.approx((0.2, 1.0))  # a fixed training direction
    same = model.sample(np.full(2, 1e4), seed=1)
    assert model.sample(np.full(2, 1e4), seed=1, directions=np.array([0.2, 1.0])).tobytes() == same.tobytes()
    with pytest.raises(CalogenError, match="not conditioned on the incident direction"):
        model.sample(np.full(2, 1e4), seed=1, directions=np.array([0.3, 1.0]))
    # a directory written before direction conditioning: no such settings, no default direction
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    for key in ("directions", "cell_alpha"):
        del meta["model"][key]
    (tmp_path / "model" / "config.json").write_text(json.dumps(meta))
    pre = json.loads((tmp_path / "model" / "preprocessing.json").read_text())
    (tmp_path / "model" / "preprocessing.json").write_text(json.dumps({k: x for k, x in pre.items() if k not in ("theta", "phi")}))
    old = load(tmp_path / "model")
    assert old.default_direction == (0.0, 0.0) and old.sample(np.full(2, 1e4), seed=1).shape == (2, GEOMETRY.n_voxels)


def test_generate_cli_direction(tmp_path, capsys):
    e, v = toy_showers(Geometry.builtin("tiny"), 320, seed=4)
    d = np.random.default_rng(4).uniform(0, 0.5, (len(e), 2))
    write_showers(tmp_path / "train.h5", e, v, directions=d)
    preset = Preset.from_dict("tiny-directions", {"model": {"directions": True}}, base=Preset.resolve("tiny"))
    train(tmp_path / "train.h5", "tiny", preset, tmp_path / "model", max_steps=1)
    out = tmp_path / "gen.h5"
    argv = ["generate", str(tmp_path / "model"), "--n", "4", "--energy", "10GeV", "--theta", "20", "--phi", "3.1416", "-o", str(out)]
    assert main(argv) == 0
    with h5py.File(out) as f:
        assert f.attrs["theta"] == pytest.approx(math.radians(20)) and f.attrs["phi"] == pytest.approx(3.1416)
    assert main([*argv[:-2], "--no-progress", "-o", str(tmp_path / "eta.h5"), "--eta", "2.0"]) == 2  # --theta and --eta together
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "model"), "--n", "2", "--energy", "10GeV", "--theta", "95", "-o", str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err
    assert "out of range" in err and len(err.strip().splitlines()) == 1


def test_at_normal_incidence_every_phi_is_the_same_direction():
    from pathlib import Path

    from calogen.models.preprocess import same_direction

    assert same_direction(np.array([[0.0, 1.2], [0.0, -3.0]]), (0.0, 0.0))
    assert same_direction(np.array([0.3, 0.5 + 2 * math.pi]), (0.3, 0.5))
    assert not same_direction(np.array([[0.0, 0.0], [1e-4, 0.0]]), (0.0, 0.0))
    assert not same_direction(np.array([0.3, 0.6]), (0.3, 0.5))

    shipped = load(Path(__file__).resolve().parents[1] / "src" / "calogen" / "data" / "pretrained" / "cpu-small-ds2")  # normal incidence
    e = np.array([5e3, 2e4])
    default = shipped.sample(e, seed=3)
    np.testing.assert_array_equal(shipped.sample(e, seed=3, directions=np.array([0.0, 1.2])), default)
    with pytest.raises(CalogenError, match="not conditioned on the incident direction"):
        shipped.sample(e, seed=3, directions=np.array([0.01, 0.0]))
