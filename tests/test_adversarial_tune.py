"""Adversarial tuning: the differentiable high-level vector is the official one, a generator step moves the
critic's verdict, tunes are reproducible and resumable to the byte, and bad requests are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from calogen.cli import main
from calogen.features import compute_features, high_level_vector
from calogen.geometry import Geometry
from calogen.io import ShowerWriter
from calogen.models.generator import load
from calogen.train.adversarial import TuneError, TuneSettings, _Tuner, _reference, tune_adversarial
from calogen.train.high_level import HighLevelVector
from calogen.train.loop import train

from _model_data import one_thread, toy_showers  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = Geometry.builtin("tiny")
QUICK = TuneSettings(steps=4, batch_size=16, checkpoint_every=2, lr=1e-3, networks=("shape",))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny flow model (a few steps) and its training file."""
    root = tmp_path_factory.mktemp("adv")
    with ShowerWriter(root / "train.h5", TINY) as w:
        w.append(*toy_showers(TINY, 200, seed=3, e_range=(1e3, 1e4)))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(root / "train.h5", "tiny", "tiny", root / "run", max_steps=20)
    finally:
        torch.set_num_threads(before)
    return root


@pytest.mark.parametrize("name", ["tiny", "ds2"])
def test_the_differentiable_vector_is_the_official_one(name):
    g = Geometry.builtin(name)
    rng = np.random.default_rng(0)
    showers = (rng.exponential(1.0, (40, g.n_voxels)) * (rng.random((40, g.n_voxels)) < 0.3)).astype(np.float32)
    energies = rng.uniform(1e3, 1e5, 40).astype(np.float32)
    official = high_level_vector(compute_features(energies, showers, g))
    x = torch.from_numpy(showers).requires_grad_(True)
    mine = HighLevelVector(g)(torch.from_numpy(energies), x)
    np.testing.assert_allclose(mine.detach().numpy(), official, atol=1e-4)
    mine.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_a_generator_step_raises_the_critics_verdict_on_its_showers(model):
    flow = load(model / "run")
    reference, energies, directions = _reference(flow, model / "train.h5", None)
    tuner = _Tuner(flow, reference, energies, directions, TuneSettings(batch_size=32, lr=3e-3, critic_lr=0.0, anchor=0.0, ema_decay=0.0))

    def verdict() -> float:  # the critic's mean logit on a fixed batch of generated showers
        gen = torch.Generator().manual_seed(9)
        e = torch.from_numpy(energies[:32]).reshape(-1, 1)
        noise_energy, noise_shape = torch.randn((32, tuner.energy_noise), generator=gen), torch.randn((32, TINY.n_voxels), generator=gen)
        with torch.no_grad():
            showers = tuner.pipe(e, noise_energy, noise_shape)
            return float(tuner.critic(tuner._standardised(e, showers)).mean())

    before = verdict()
    for step in range(3):
        tuner.step(step)  # critic_lr 0: the critic stays as initialised, only the generator moves
    assert verdict() > before


def test_feature_matching_pulls_the_conditional_means_together(model):
    flow = load(model / "run")
    reference, energies, directions = _reference(flow, model / "train.h5", None)
    settings = TuneSettings(batch_size=64, lr=3e-3, critic_lr=0.0, anchor=0.0, ema_decay=0.0, feature_matching=100.0)
    target = reference + 0.5 * reference.std(0)  # every column's mean half a standard deviation above the generator's
    tuner = _Tuner(flow, target, energies, directions, settings)
    rows = torch.arange(64)
    assert float(tuner._feature_matching(tuner.reference[rows], rows, None)) == 0.0  # the training showers themselves
    shifted = tuner.reference[rows] + 0.5  # conditions 1 and log E: each half's means are 0.5 and 0.5 x its mean log E
    half_a, half_b = float(tuner.log_e[:32].mean()), float(tuner.log_e[32:64].mean())
    expected = 0.25 * shifted.shape[1] * (1 + half_a * half_b)
    assert float(tuner._feature_matching(shifted, rows, None)) == pytest.approx(expected, rel=1e-5)

    def distance() -> float:  # squared mean difference on 200 generated showers at the training rows' energies
        gen = torch.Generator().manual_seed(9)
        e = torch.from_numpy(energies[:200]).reshape(-1, 1)
        noise_energy, noise_shape = torch.randn((200, tuner.energy_noise), generator=gen), torch.randn((200, TINY.n_voxels), generator=gen)
        with torch.no_grad():
            fake = tuner._standardised(e, tuner.pipe(e, noise_energy, noise_shape))
        return float((fake - tuner.reference[:200]).mean(0).pow(2).sum())

    before = distance()
    figures = [tuner.step(step) for step in range(8)]
    assert all("feature_matching" in f for f in figures) and distance() < 0.8 * before


def test_tunes_are_reproducible_resumable_and_never_overwrite(model, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    record = tune_adversarial(model / "run", model / "train.h5", a, settings=QUICK)
    assert record["settings"]["steps"] == 4 and len(record["history"]) == 1
    assert not (a / "checkpoints").exists() and not a.with_name("a.partial").exists()
    tuned, start = load(a), load(model / "run")
    for net, tuned_too in (("shape", True), ("energy", False)):  # the tuned network moved, the other did not
        moved = [not torch.equal(p, q) for p, q in zip(getattr(tuned.pair, net).parameters(), getattr(start.pair, net).parameters(), strict=True)]
        assert any(moved) == tuned_too
    assert tuned.sample(np.full(3, 5e3), seed=1).shape == (3, TINY.n_voxels)
    # interrupted at its last step (after the checkpoint at step 2), then resumed: the same bytes as one run
    with pytest.raises(KeyboardInterrupt):
        tune_adversarial(model / "run", model / "train.h5", b, settings=QUICK, log=_interrupt)
    with pytest.raises(TuneError, match="--resume"):
        tune_adversarial(model / "run", model / "train.h5", b, settings=QUICK)
    tune_adversarial(model / "run", model / "train.h5", b, settings=QUICK, resume=True)
    assert (a / "weights.safetensors").read_bytes() == (b / "weights.safetensors").read_bytes()
    assert json.loads((b / "adversarial.json").read_text())["history"] == record["history"]
    before = (a / "weights.safetensors").read_bytes()
    args = ["tune-adversarial", str(model / "run"), "--data", str(model / "train.h5"), "--steps", "2"]
    assert main([*args, "--out", str(a)]) == 2
    assert "exists" in capsys.readouterr().err and (a / "weights.safetensors").read_bytes() == before


def _interrupt(line: str) -> None:
    """A progress callback that stops the run (lines come every 25 steps and at the last one)."""
    raise KeyboardInterrupt


def test_bad_requests_are_one_line_errors(model, tmp_path, capsys):
    base = ["tune-adversarial", str(model / "run"), "--out", str(tmp_path / "o")]
    assert main([*base, "--data", str(tmp_path / "missing.h5")]) == 2
    assert main([*base, "--data", str(model / "train.h5"), "--steps", "0"]) == 2
    assert main([*base, "--data", str(model / "train.h5"), "--lr", "-1"]) == 2
    assert main([*base, "--data", str(model / "train.h5"), "--feature-matching", "nan"]) == 2
    err = capsys.readouterr().err
    assert "expected a finite number >= 0, got '-1'" in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()
    with pytest.raises(TuneError, match="networks"):
        TuneSettings(networks=("shape", "shape"))


def test_a_direction_conditioned_model_is_tuned_at_its_training_directions(tmp_path):
    from calogen.io import write_showers
    from calogen.train.config import Preset

    e, showers = toy_showers(TINY, 120, seed=4, e_range=(1e3, 1e4))
    directions = np.stack([np.linspace(0, 0.5, 120), np.zeros(120)], axis=1).astype(np.float32)
    write_showers(tmp_path / "train.h5", e, showers, directions=directions)
    preset = Preset.from_dict("tiny-directions", {"model": {"directions": True}}, base=Preset.resolve("tiny"))
    train(tmp_path / "train.h5", "tiny", preset, tmp_path / "run", max_steps=5)
    reference, _, got = _reference(load(tmp_path / "run"), tmp_path / "train.h5", None)
    assert reference.shape[1] == 42 + 3  # the 42 columns of the tiny vector, then the unit vector of the direction
    np.testing.assert_allclose(reference[:, -1], np.cos(directions[:, 0]), rtol=1e-6)
    np.testing.assert_array_equal(got, directions)
    tune_adversarial(tmp_path / "run", tmp_path / "train.h5", tmp_path / "tuned", settings=QUICK)
    assert load(tmp_path / "tuned").sample(np.full(2, 5e3), seed=1, directions=np.array([0.3, 0.0])).shape == (2, TINY.n_voxels)
