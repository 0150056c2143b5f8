"""Training: presets, deterministic resumable data order, loss decrease, checkpoint + exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _model_data import one_thread, toy_showers  # noqa: F401

import calogen.train.checkpoint as checkpoint
from calogen.errors import CalogenError
from calogen.geometry import Geometry
from calogen.io import ShowerData, write_showers
from calogen.models.preprocess import Preprocessor
from calogen.train.config import PRESETS, Preset
from calogen.train.data import BlockLoader
from calogen.train.loop import train
from calogen.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = Geometry.builtin("tiny")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    write_showers(path, *toy_showers(TINY, 200, seed=0))
    return path


def test_presets_parse_and_reject_unknown_keys(tmp_path):
    assert set(PRESETS) == {"tiny", "cpu-small", "ds2-base", "ds3-base", "student-consistency", "student-average-velocity", "hybrid-small",
                            "cpu-small-cells"}
    (tmp_path / "p.yaml").write_text("model:\n  channels: [4, 4]\ntrain:\n  max_steps: 7\n")
    preset = Preset.resolve(tmp_path / "p.yaml")
    assert preset.model.channels == (4, 4) and preset.train.max_steps == 7
    assert Preset.from_dict("again", preset.to_dict()) == Preset("again", preset.model, preset.train)
    (tmp_path / "bad.yaml").write_text("train:\n  max_step: 7\n")
    with pytest.raises(CalogenError, match="unknown train key.*max_step"):
        Preset.resolve(tmp_path / "bad.yaml")
    with pytest.raises(CalogenError, match="model.objective"):
        Preset.from_dict("x", {"model": {"objective": "gan"}})
    with pytest.raises(CalogenError, match="unknown preset"):
        Preset.resolve("huge")


def test_loader_is_deterministic_and_resumable(data_file):
    def loader():
        return BlockLoader(data_file, TINY, batch_size=16, block_size=16, shuffle_blocks=2, val_fraction=0.2, seed=3)

    a, b = loader(), loader()
    assert set(a.val_blocks).isdisjoint(a.train_blocks)
    first = [batch.energies for _, batch in zip(range(2 * a.batches_per_epoch), a.batches(), strict=False)]
    resumed = [batch.energies for _, batch in zip(range(3), b.batches(a.batches_per_epoch - 1), strict=False)]
    for x, y in zip(first[a.batches_per_epoch - 1 :], resumed, strict=False):
        np.testing.assert_array_equal(x, y)
    epoch0 = np.concatenate(first[: a.batches_per_epoch])
    assert np.unique(epoch0).size == epoch0.size  # no shower twice within an epoch
    assert not np.array_equal(epoch0, np.concatenate(first[a.batches_per_epoch :]))  # reshuffled per epoch
    a.close()
    b.close()


def test_loss_decreases_on_a_fixed_batch():
    energies, showers = toy_showers(TINY, 32, seed=1)
    trainer = Trainer(TINY, PRESETS["tiny"], Preprocessor.fit(TINY, energies, showers, radial=True))
    batch = ShowerData(energies, showers)
    records = [trainer.step(batch, 10) for _ in range(20)]  # step 10: the same noise each time, past warm-up
    first, last = records[0], records[-1]
    assert last["loss_energy"] < 0.7 * first["loss_energy"]
    assert last["loss_shape"] < 0.7 * first["loss_shape"]
    assert last["loss_radial"] < 0.95 * first["loss_radial"]  # random toy fractions: little to learn


def _losses(run):
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "history.jsonl").read_text().splitlines())}


def test_energy_model_draws_its_own_reproducible_batches(data_file):
    preset = PRESETS["tiny"]
    assert preset.train.energy_batch_size == 64
    loader = BlockLoader(data_file, TINY, batch_size=32, block_size=64, shuffle_blocks=2, val_fraction=0.1, seed=0)
    energies, showers = toy_showers(TINY, 50, seed=3)
    trainer = Trainer(TINY, preset, Preprocessor.fit(TINY, energies, showers, radial=True))
    trainer.set_energy_pool(loader)
    assert trainer.energy_pool is not None and trainer.energy_pool[0].shape == (loader.n_train, 1)
    first, again, other = trainer._energy_batch(5), trainer._energy_batch(5), trainer._energy_batch(6)
    assert first is not None and other is not None and first[1].shape == (64, 6)
    torch.testing.assert_close(first, again)
    assert not torch.equal(first[1], other[1])
    loader.close()


@pytest.mark.parametrize("bad", [{"model": {"energy_nfe": 0}}, {"model": {"energy_sampler": "rk4"}}, {"train": {"energy_batch_size": 0}}])
def test_energy_settings_are_validated(bad):
    with pytest.raises(CalogenError, match="energy_"):
        Preset.from_dict("bad", bad, base=PRESETS["tiny"])


def test_checkpoint_resume_reproduces_the_next_loss(data_file, tmp_path):
    straight = train(data_file, "tiny", "tiny", tmp_path / "a", max_steps=3)
    assert straight.steps == 3
    train(data_file, "tiny", "tiny", tmp_path / "b", max_steps=2)
    with pytest.raises(CalogenError, match="--resume"):
        train(data_file, "tiny", "tiny", tmp_path / "b", max_steps=3)
    train(data_file, "tiny", "tiny", tmp_path / "b", max_steps=3, resume=True)
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert sorted(b) == [1, 2, 3] and a == b
    files = {p.name for p in (tmp_path / "b" / "checkpoints").rglob("*") if p.is_file()}
    assert files == {"latest.json", "state.json", "state.safetensors"}  # nothing pickled


def test_interrupted_checkpoint_write_keeps_the_previous_one(data_file, tmp_path, monkeypatch):
    train(data_file, "tiny", "tiny", tmp_path / "run", max_steps=1)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.write_checkpoint(tmp_path / "run", 5, {"x": torch.zeros(1)}, {})
    assert checkpoint.latest_checkpoint(tmp_path / "run").name == "step-00000001"
    assert not list((tmp_path / "run" / "checkpoints").glob(".partial-*"))


def test_errors_name_the_fix(data_file, tmp_path):
    with pytest.raises(CalogenError, match="no training run to resume"):
        train(data_file, "tiny", "tiny", tmp_path / "none", resume=True)
    with pytest.raises(CalogenError, match="pick the matching --geometry"):
        train(data_file, "ds2", "tiny", tmp_path / "wrong")


def test_edm_objective_shares_the_training_step():
    energies, showers = toy_showers(TINY, 32, seed=4)
    preset = Preset.from_dict("edm", {"model": {"objective": "edm"}}, base=PRESETS["tiny"])
    trainer = Trainer(TINY, preset, Preprocessor.fit(TINY, energies, showers, radial=True))
    losses = [trainer.step(ShowerData(energies, showers), 10)["loss"] for _ in range(8)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_resume_after_kill_9(data_file, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "calogen.cli", "train", "--data", str(data_file), "--geometry", "tiny",
           "--preset", "tiny", "--out", str(run), "--max-steps", "1000", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "latest.json").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = checkpoint.latest_checkpoint(run)
    assert done is not None
    step = int(done.name.split("-")[1])
    result = train(data_file, "tiny", "tiny", run, resume=True, max_steps=step + 2)
    assert result.steps == step + 2
    assert sorted(_losses(run)) == list(range(1, step + 3))  # no step lost or logged twice


def test_ring_energy_model_trains_and_generates(data_file, tmp_path):
    from calogen.models import load

    preset = Preset.from_dict("rings", {"model": {"energy_groups": "rings", "radial_width": 0}}, base=PRESETS["tiny"])
    train(data_file, "tiny", preset, tmp_path / "run", max_steps=2)
    model = load(tmp_path / "run")
    n_rings = sum(TINY.layers[i].n_r for i in TINY.nonempty_layers)
    assert model.preprocessor.layer_dim == 1 + n_rings
    assert int(model.export_module(nfe=1).groups.max()) + 1 == n_rings
    showers = model.sample(np.array([2e3, 9e3]), seed=0, nfe=1)
    assert showers.shape == (2, TINY.n_voxels) and np.isfinite(showers).all() and (showers >= 0).all()
