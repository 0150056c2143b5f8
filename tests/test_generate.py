"""Generation: seeded reproducibility, the export hook, energy-range warnings, the CLI end to end."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
import torch
from _model_data import one_thread, toy_showers  # noqa: F401

from calogen.cli import main
from calogen.errors import CalogenError
from calogen.generator import Generator
from calogen.geometry import Geometry
from calogen.io import read_showers, write_showers
from calogen.models import load

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = Geometry.builtin("tiny")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny model trained through the CLI."""
    root = tmp_path_factory.mktemp("gen")
    write_showers(root / "train.h5", *toy_showers(TINY, 160, seed=2, e_range=(1e3, 1e4)))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    status = main(["train", "--data", str(root / "train.h5"), "--geometry", "tiny", "--preset", "tiny",
                   "--out", str(root / "run"), "--max-steps", "3", "--no-progress"])  # fmt: skip
    torch.set_num_threads(before)
    assert status == 0
    return root


def test_model_is_a_reproducible_generator(run_dir):
    model = load(run_dir / "run")
    assert isinstance(model, Generator) and model.geometry == TINY
    energies = np.geomspace(1.2e3, 9e3, 7)
    a = model.sample(energies, seed=4, nfe=2)
    assert a.shape == (7, 120) and a.dtype == np.float32 and (a >= 0).all()
    np.testing.assert_array_equal(a, model.sample(energies, seed=4, nfe=2))
    for batch_size in (1, 3, 7, 1000):  # the same bytes for any batch size: evaluation chunks do not depend on it
        np.testing.assert_array_equal(a, model.sample(energies, seed=4, nfe=2, batch_size=batch_size))
    assert not np.array_equal(a, model.sample(energies, seed=5, nfe=2))
    assert ((a == 0) | (a >= TINY.threshold)).all()


def test_export_module_matches_sample_with_noise(run_dir):
    model = load(run_dir / "run")
    shapes = model.noise_shapes()
    assert shapes == {"noise_energy": (6 + 20,), "noise_shape": (120,)}  # layer vector + radial vector (5 layers x 4 r bins)
    energies = np.array([1.5e3, 8e3], dtype=np.float32)
    noise_e, noise_s = model.draw_noise(2, seed=9)
    expected = model.sample_with_noise(energies, noise_e, noise_s, nfe=3, sampler="heun")
    module = model.export_module(nfe=3, sampler="heun")
    with torch.no_grad():
        out = module(torch.from_numpy(energies[:, None]), torch.from_numpy(noise_e), torch.from_numpy(noise_s))
    np.testing.assert_array_equal(out.numpy(), expected)
    np.testing.assert_array_equal(expected, model.sample(energies, seed=9, nfe=3, sampler="heun"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # raised inside torch's group_norm size check
        traced = torch.jit.trace(module, (torch.from_numpy(energies[:, None]), torch.from_numpy(noise_e), torch.from_numpy(noise_s)))
    np.testing.assert_allclose(traced(torch.full((1, 1), 1.5e3), torch.from_numpy(noise_e[:1]), torch.from_numpy(noise_s[:1])).numpy(),
                               expected[:1], rtol=1e-5, atol=1e-6)  # fmt: skip


def test_same_bytes_for_any_batch_size_across_evaluation_chunks(run_dir):
    model = load(run_dir / "run")
    energies = np.geomspace(1.2e3, 9e3, 300)  # two evaluation chunks: 256 + 44
    reference = model.sample(energies, seed=2, nfe=2)
    for batch_size in (1, 7, 256, None):  # CPU kernels round differently for 1, 7, 256 rows; the output must not
        np.testing.assert_array_equal(model.sample(energies, seed=2, nfe=2, batch_size=batch_size), reference)


def test_nfe_zero_is_refused_not_replaced(run_dir):
    model = load(run_dir / "run")
    for call in (lambda: model.using(nfe=0), lambda: model.sample(np.array([2e3]), seed=0, nfe=0), lambda: model.export_module(0)):
        with pytest.raises(CalogenError, match="nfe must be >= 1"):
            call()


def test_energy_network_uses_its_own_nfe(run_dir):
    model = load(run_dir / "run")
    assert (model.config.energy_sampler, model.config.energy_nfe) == ("midpoint", 6)  # the tiny preset
    calls = {"energy": 0, "shape": 0}
    for name in calls:
        getattr(model.pair, name).register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    model.sample(np.array([2e3, 4e3]), seed=0, nfe=3, sampler="euler")
    assert calls == {"energy": 6, "shape": 3}


def test_energies_outside_training_range_warn(run_dir):
    model = load(run_dir / "run")
    with pytest.warns(UserWarning, match="1 of 2 energies lie outside the training range"):
        model.sample(np.array([5e3, 1e6]), seed=0, nfe=1)
    with pytest.raises(CalogenError, match="finite and > 0"):
        model.sample(np.array([-1.0]), seed=0)


def test_generate_cli_end_to_end(run_dir, capsys):
    out = run_dir / "gen.h5"
    argv = ["generate", str(run_dir / "run"), "--n", "12", "--energy", "loguniform:1GeV:20GeV", "--nfe", "2",
            "--sampler", "midpoint", "--batch-size", "5", "--seed", "3", "-o", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    data = read_showers(out, TINY)
    assert data.showers.shape == (12, 120) and np.isfinite(data.showers).all()
    with h5py.File(out) as f:
        assert f.attrs["nfe"] == 2 and f.attrs["sampler"] == "midpoint"
        assert 0 < f.attrs["energies_out_of_training_range"] < 12  # 10-20 GeV lies above the 1-10 GeV training range
    assert main(argv[:-3] + ["-o", str(run_dir / "again.h5"), "--no-progress"]) == 0
    np.testing.assert_array_equal(read_showers(run_dir / "again.h5").showers, data.showers)
    assert main(["generate", str(run_dir / "run"), "--energies-from", str(out), "--n", "4", "-o", str(run_dir / "ref.h5")]) == 0
    np.testing.assert_array_equal(read_showers(run_dir / "ref.h5").energies, data.energies[:4])


def test_cli_errors_are_one_line(run_dir, tmp_path, capsys):
    assert main(["generate", str(tmp_path), "--n", "2", "--energy", "1GeV", "-o", str(tmp_path / "x.h5")]) == 2
    assert "not a model directory" in capsys.readouterr().err
    assert main(["generate", str(run_dir / "run"), "--n", "2", "--energy", "1GeV", "--sampler", "rk4", "-o", str(tmp_path / "x.h5")]) == 2
    assert "unknown sampler" in capsys.readouterr().err
    assert main(["train", "--data", str(run_dir / "train.h5"), "--geometry", "ds2", "--preset", "tiny", "--out", str(tmp_path / "r")]) == 2
    assert "pick the matching --geometry" in capsys.readouterr().err


def test_model_directory_from_a_newer_version_is_a_clear_error(run_dir, tmp_path, capsys):
    import json
    import shutil

    newer = tmp_path / "newer"
    shutil.copytree(run_dir / "run", newer)
    meta = json.loads((newer / "config.json").read_text())
    meta["model"]["fancy_new_setting"] = 3
    (newer / "config.json").write_text(json.dumps(meta))
    assert main(["generate", str(newer), "--n", "2", "--energy", "2GeV", "-o", str(tmp_path / "x.h5")]) == 2
    assert "unknown to this calogen" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()
