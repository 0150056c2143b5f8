"""Hybrid refiner: a bridge from FastSim showers, trained through ``calogen train --source``, reproducible,
close to the identity when source and target agree, loaded as a HybridGenerator, and clear about bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from calogen.cli import main
from calogen.errors import CalogenError
from calogen.generator import Generator
from calogen.geometry import Geometry
from calogen.hybrid import HybridGenerator, refine_file
from calogen.io import ShowerFile, ShowerWriter
from calogen.models import load
from calogen.models.refiner import Bridge, ot_assignment
from calogen.train.config import PRESETS, Preset
from calogen.train.data import SourcePool
from calogen.train.loop import train

from _model_data import one_thread, toy_showers  # noqa: F401

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore:.*outside the training range:UserWarning")]
"""The toy FastSim file's energies reach 3% beyond the teacher's training range."""
TINY = Geometry.builtin("tiny")
FASTSIM_ATTRS = {"engine": "gflash", "engine_options": "{}", "particle": "e-", "geometry": "tiny"}


def _write(path: Path, energies: np.ndarray, showers: np.ndarray, attrs: dict | None = None) -> Path:
    with ShowerWriter(path, TINY, attrs=attrs) as w:
        w.append(energies, showers)
    return path


def _quick(**train: object) -> Preset:
    """hybrid-small's objective on the tiny architecture, a few steps."""
    tiny = PRESETS["tiny"]
    model = dataclasses.replace(tiny.model, objective="refiner", bridge_sigma=0.1, sampler="euler", nfe=2)
    return dataclasses.replace(tiny, name="hybrid-tiny", model=model, train=dataclasses.replace(tiny.train, energy_batch_size=None, coupling_bins=8, **train))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Toy 'full simulation' showers (seed 2), a toy 'FastSim' of the same law (seed 3), and a flow-matching teacher."""
    root = tmp_path_factory.mktemp("hybrid")
    _write(root / "full.h5", *toy_showers(TINY, 256, seed=2, e_range=(1e3, 1e4)))
    _write(root / "fast.h5", *toy_showers(TINY, 256, seed=3, e_range=(1e3, 1e4)), attrs=FASTSIM_ATTRS)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(root / "full.h5", "tiny", "tiny", root / "teacher")
    finally:
        torch.set_num_threads(before)
    return root


def test_bridge_loss_is_zero_for_the_exact_velocity_and_prior_is_refused():
    x0, x1 = torch.randn(4, 5), torch.randn(4, 5)
    bridge = Bridge(lambda x, t, c: x1 - x0, sigma=0.0)
    assert float(bridge.loss(x0, torch.zeros(4, 1), source=x1).max()) == 0.0
    with pytest.raises(CalogenError, match="starts from FastSim showers"):
        bridge.prior(x0)


def test_ot_assignment_pairs_nearest_within_bins():
    targets = torch.tensor([[0.0], [10.0], [20.0]])
    candidates = torch.tensor([[20.3], [0.1], [9.9], [0.2], [10.2], [19.8]])
    allowed = np.ones((3, 6), dtype=bool)
    np.testing.assert_array_equal(ot_assignment(targets, candidates, allowed), [1, 2, 5])
    allowed[0, 1] = False  # candidate 1 is in another energy bin
    assert ot_assignment(targets, candidates, allowed)[0] == 3


def test_source_pool_draws_from_the_energy_bin(files):
    full = ShowerFile(files / "full.h5")
    pool = SourcePool(files / "fast.h5", TINY, full.read_energies(), bins=8)
    rows, bins = pool.draw(np.array([1.1e3, 5e3, 9.5e3]), np.random.default_rng(0), 16)
    e = pool.energies[rows, 0]
    width = np.exp(np.diff(pool.log_edges).max())
    for i, target in enumerate((1.1e3, 5e3, 9.5e3)):
        assert (e[i] / target < width * 1.5).all() and (target / e[i] < width * 1.5).all()
    assert bins.tolist() == sorted(bins.tolist())


@pytest.fixture(scope="module")
def refiner(files: Path) -> Path:
    train(files / "full.h5", "tiny", _quick(max_steps=30), files / "refiner", teacher=files / "teacher", source=files / "fast.h5")
    return files / "refiner"


def test_refiner_directory_records_its_fastsim_and_keeps_the_teachers_energy_networks(refiner, files):
    meta = json.loads((refiner / "config.json").read_text())
    assert meta["model"]["objective"] == "refiner"
    assert meta["refiner"]["fastsim"] == {"engine": "gflash", "options": {}, "particle": "e-", "geometry": "tiny"}
    assert len(meta["refiner"]["source"]["sha256"]) == 64 and meta["refiner"]["source"]["n_showers"] == 256
    gen, teacher = load(refiner), load(files / "teacher")
    assert isinstance(gen, HybridGenerator) and isinstance(gen, Generator)
    for name in ("energy", "radial"):
        for key, value in getattr(teacher.pair, name).state_dict().items():
            torch.testing.assert_close(getattr(gen.refiner.model.pair, name).state_dict()[key], value, rtol=0, atol=0)
    shape = dict(gen.refiner.model.pair.shape.named_parameters())
    assert any(not torch.equal(shape[k], v) for k, v in teacher.pair.shape.named_parameters())


def test_refiner_is_reproducible_from_a_seed(refiner, files, tmp_path):
    gen = load(refiner)
    data = ShowerFile(files / "fast.h5").read(0, 40)
    a = gen.refiner.refine(data.energies, data.showers, seed=5, nfe=2)
    np.testing.assert_array_equal(a, gen.refiner.refine(data.energies, data.showers, seed=5, nfe=2))
    assert not np.array_equal(a, gen.refiner.refine(data.energies, data.showers, seed=6, nfe=2))
    np.testing.assert_allclose(a.sum(1), gen.refiner.refine(data.energies, data.showers, seed=5, nfe=1).sum(1), rtol=1e-5)  # energies: same networks
    for name in ("a.h5", "b.h5"):
        assert main(["refine", str(refiner), "--fastsim", str(files / "fast.h5"), "-o", str(tmp_path / name), "--nfe", "1", "--seed", "3"]) == 0
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    assert not list(tmp_path.glob(".*partial*"))
    shown = gen.using(nfe=1).sample(np.geomspace(1.2e3, 9e3, 5), seed=2)  # the GFLASH engine runs inside
    assert shown.shape == (5, TINY.n_voxels) and np.isfinite(shown).all()
    np.testing.assert_array_equal(shown, gen.using(nfe=1).sample(np.geomspace(1.2e3, 9e3, 5), seed=2, batch_size=2))


def test_generate_takes_a_refiner(refiner, tmp_path):
    out = tmp_path / "gen.h5"
    assert main(["generate", str(refiner), "--energy", "loguniform:1.2GeV:9GeV", "--n", "6", "--nfe", "1", "-o", str(out), "--no-progress"]) == 0
    with ShowerFile(out, TINY) as f:
        assert f.n_showers == 6 and f.attrs["generator"] == "calogen-hybrid"


def test_identity_refiner_changes_showers_little(files, tmp_path):
    """Source and target drawn from one law: the trained refiner moves a shower much less than the distance
    between two independent showers of that law."""
    e, x = toy_showers(TINY, 256, seed=2, e_range=(1e3, 1e4))
    same = _write(tmp_path / "same.h5", e, x, attrs=FASTSIM_ATTRS)
    train(files / "full.h5", "tiny", _quick(max_steps=200, lr=3e-3, eval_every=50, checkpoint_every=50),
          tmp_path / "identity", teacher=files / "teacher", source=same)  # fmt: skip
    gen = load(tmp_path / "identity")
    pre = gen.preprocessor
    z = lambda v, en: pre.voxels_forward(torch.from_numpy(v).double(), torch.from_numpy(en).double())  # noqa: E731
    other = ShowerFile(files / "fast.h5").read(0, 64)
    refined = gen.refiner.refine(e[:64], x[:64], seed=1, nfe=2)
    moved = (z(refined, e[:64]) - z(x[:64], e[:64])).square().mean()
    apart = (z(other.showers, other.energies) - z(x[:64], e[:64])).square().mean()
    assert float(moved) < 0.5 * float(apart)


def test_bad_inputs_are_clear_one_line_errors(refiner, files, tmp_path, capsys):
    base = ["train", "--data", str(files / "full.h5"), "--geometry", "tiny", "--no-progress", "--preset", "hybrid-small"]
    ds2 = tmp_path / "ds2.h5"
    with ShowerWriter(ds2, Geometry.builtin("ds2"), attrs={"geometry": "ds2"}) as w:
        w.append(np.full((2, 1), 5e3, np.float32), np.zeros((2, Geometry.builtin("ds2").n_voxels), np.float32))
    assert main([*base, "--source", str(ds2), "--out", str(tmp_path / "a")]) == 2
    assert "geometry 'ds2'" in capsys.readouterr().err and not (tmp_path / "a").exists()
    high = _write(tmp_path / "high.h5", *toy_showers(TINY, 64, seed=4, e_range=(2e4, 5e4)), attrs=FASTSIM_ATTRS)
    assert main([*base, "--source", str(high), "--out", str(tmp_path / "b")]) == 2
    assert "outside" in capsys.readouterr().err
    narrow = _write(tmp_path / "narrow.h5", *toy_showers(TINY, 64, seed=4, e_range=(2e3, 4e3)), attrs=FASTSIM_ATTRS)
    assert main([*base, "--source", str(narrow), "--out", str(tmp_path / "c")]) == 2
    assert "does not cover" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "d")]) == 2
    assert "--source" in capsys.readouterr().err
    refine = ["refine", str(refiner), "-o", str(tmp_path / "r.h5"), "--fastsim"]
    for bad, message in ((ds2, "geometry 'ds2'"), (high, "outside")):
        assert main([*refine, str(bad)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert main(["refine", str(files / "teacher"), "--fastsim", str(files / "fast.h5"), "-o", str(tmp_path / "r.h5")]) == 2
    assert "not a refiner" in capsys.readouterr().err
    assert not (tmp_path / "r.h5").exists()
    with pytest.raises(CalogenError, match="starts from FastSim"):
        load(refiner).refiner.model.sample(np.full(2, 5e3), seed=0)
    with pytest.raises(CalogenError, match="shape"):
        load(refiner).refiner.refine(np.full(2, 5e3), np.zeros((2, 3)), seed=0)
    with pytest.raises(CalogenError, match="model.bridge_sigma"):
        Preset.from_dict("x", {"model": {"bridge_sigma": -1}}, base=PRESETS["hybrid-small"])
    with pytest.raises(CalogenError, match="train.coupling"):
        Preset.from_dict("x", {"train": {"coupling": "nearest"}}, base=PRESETS["hybrid-small"])


def test_ot_coupling_trains_and_refine_file_matches_refine(files, tmp_path):
    run = train(files / "full.h5", "tiny", _quick(max_steps=3, coupling="ot", ot_candidates=3), tmp_path / "ot",
                teacher=files / "teacher", source=files / "fast.h5")  # fmt: skip
    assert np.isfinite(run.best_val)
    refine_file(tmp_path / "ot", files / "fast.h5", tmp_path / "out.h5", seed=4, nfe=1, chunk_size=100)
    gen, data = load(tmp_path / "ot"), ShowerFile(files / "fast.h5").read(100, 200)
    from calogen.generator import derive_seed

    np.testing.assert_array_equal(ShowerFile(tmp_path / "out.h5").read(100, 200).showers,
                                  gen.refiner.refine(data.energies, data.showers, seed=derive_seed(4, 1), nfe=1))  # fmt: skip


def test_a_refiner_uses_its_teachers_occupancy_stage(files, tmp_path):
    from calogen.models.occupancy import load_occupancy

    fit = ["--steps", "20", "--spectrum-showers", "30"]
    assert main(["fit-occupancy", str(files / "teacher"), "--data", str(files / "full.h5"), *fit, "--out", str(tmp_path / "occ")]) == 0
    train(files / "full.h5", "tiny", _quick(max_steps=2), tmp_path / "r", teacher=tmp_path / "occ", source=files / "fast.h5")
    mine, theirs = load_occupancy(tmp_path / "r", TINY), load_occupancy(tmp_path / "occ", TINY)
    assert mine is not None and theirs is not None and mine.config == theirs.config
    gen = load(tmp_path / "r")
    data = ShowerFile(files / "fast.h5").read(0, 20)
    refined = gen.refiner.refine(data.energies, data.showers, seed=1, nfe=2)
    np.testing.assert_array_equal(refined, gen.refiner.refine(data.energies, data.showers, seed=1, nfe=2))
    assert np.isfinite(refined).all() and (refined.sum(1) > 0).all()
