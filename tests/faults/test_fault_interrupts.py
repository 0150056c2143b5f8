"""Item 8 of issue 11: interruptions and restarts. A one-process simulation is interruptible between
small pieces of a chunk; training refuses a non-empty directory without ``--resume`` and another data
file or preset with it; ``evaluate`` leaves no empty output directory behind."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from _faults import one_error_line

import calogen.sim.run as run_module
import calogen.train.loop as loop
from calogen.generator import derive_seed
from calogen.io import file_sha256, read_showers, write_showers
from calogen.sim.engines import ENGINES, engine_spec
from calogen.train.config import PRESETS


class CountingEngine:
    """Shower ``i``: random voxels from ``derive_seed(seed, i)``; records the size of every call and
    raises KeyboardInterrupt (a Ctrl-C) at shower :attr:`interrupt_at`."""

    calls: list[int] = []
    interrupt_at: int | None = None

    def __init__(self, geometry, particle="e-"):
        self.geometry, self.particle = geometry, particle

    def simulate(self, energies, *, seed, first_index=0):
        energies = np.asarray(energies, dtype=np.float64).reshape(-1)
        type(self).calls.append(energies.size)
        out = np.empty((energies.size, self.geometry.n_voxels), dtype=np.float32)
        for i, energy in enumerate(energies):
            if self.interrupt_at is not None and first_index + i >= self.interrupt_at:
                raise KeyboardInterrupt
            rng = np.random.default_rng(derive_seed(seed, first_index + i))
            out[i] = energy * rng.dirichlet(np.ones(self.geometry.n_voxels))
        return out


@pytest.fixture
def counting(monkeypatch):
    monkeypatch.setitem(ENGINES, "counting", f"{__name__}:CountingEngine")
    monkeypatch.setattr(CountingEngine, "calls", [])
    monkeypatch.setattr(CountingEngine, "interrupt_at", None)
    return engine_spec("counting", "tiny", "e-")


def test_one_process_simulates_a_chunk_in_pieces_with_identical_bytes(tmp_path, counting, monkeypatch):
    whole = run_module.simulate_to_file(counting, "list:1GeV,5GeV", 12, 3, tmp_path / "whole.h5", chunk_size=12, workers=1)
    monkeypatch.setattr(run_module, "PIECE_SECONDS", 0.0)  # every piece one shower
    CountingEngine.calls.clear()
    pieces = run_module.simulate_to_file(counting, "list:1GeV,5GeV", 12, 3, tmp_path / "pieces.h5", chunk_size=12, workers=1)
    assert CountingEngine.calls == [1] * 12
    assert file_sha256(pieces) == file_sha256(whole)


def test_ctrl_c_inside_a_chunk_keeps_finished_chunks_for_resume(tmp_path, counting, monkeypatch):
    reference = run_module.simulate_to_file(counting, "1GeV", 10, 1, tmp_path / "ref.h5", chunk_size=4, workers=1)
    monkeypatch.setattr(CountingEngine, "interrupt_at", 6)  # Ctrl-C in the middle of chunk 1
    with pytest.raises(KeyboardInterrupt):
        run_module.simulate_to_file(counting, "1GeV", 10, 1, tmp_path / "out.h5", chunk_size=4, workers=1)
    work = run_module.work_dir(tmp_path / "out.h5")
    assert json.loads((work / "manifest.json").read_text())["completed_chunks"] == 1
    assert not (tmp_path / "out.h5").exists()
    monkeypatch.setattr(CountingEngine, "interrupt_at", None)
    run_module.simulate_to_file(counting, "1GeV", 10, 1, tmp_path / "out.h5", chunk_size=4, workers=1, resume=True)
    assert file_sha256(tmp_path / "out.h5") == file_sha256(reference) and not work.exists()


def _steps(run):
    return [json.loads(line)["step"] for line in (run / "history.jsonl").read_text().splitlines()]


def _train(run, data, *, preset="tiny", steps=3, resume=False):
    argv = ["train", "--data", data, "--geometry", "tiny", "--out", run, "--max-steps", steps, "--no-progress"]
    return argv + (["--preset", preset] if preset else []) + (["--resume"] if resume else [])


def _killed(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.usefixtures("one_thread")
def test_training_restarts_cleanly_and_refuses_other_data_or_preset(tmp_path, cli, shower_file, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()  # made by the user: kept when the run is killed before its first checkpoint
    monkeypatch.setattr(loop, "write_checkpoint", _killed)
    assert cli(*_train(run, shower_file))[0] == 130
    assert _steps(run) == [1, 2, 3] and not (run / "checkpoints").exists()
    monkeypatch.undo()
    status, err = cli(*_train(run, shower_file))
    assert status == 2 and "is not empty" in one_error_line(err, "train") and "--resume" in err
    assert cli(*_train(run, shower_file, resume=True))[0] == 0
    assert _steps(run) == [1, 2, 3]  # started over: no step logged twice

    data = read_showers(shower_file)
    write_showers(tmp_path / "other.h5", data.energies[::-1], data.showers[::-1])
    status, err = cli(*_train(run, tmp_path / "other.h5", resume=True))
    assert status == 2 and "differs (sha256" in one_error_line(err, "train")
    changed = PRESETS["tiny"].to_dict()
    changed["train"]["lr"] = 1e-4
    (tmp_path / "other.json").write_text(json.dumps(changed))
    status, err = cli(*_train(run, shower_file, preset=tmp_path / "other.json", resume=True))
    assert status == 2 and "another preset (it differs in train.lr)" in one_error_line(err, "train")
    assert cli(*_train(run, shower_file, preset=None, steps=5, resume=True))[0] == 0  # the stored preset, more steps
    assert _steps(run) == [1, 2, 3, 4, 5]


@pytest.mark.usefixtures("one_thread")
def test_new_training_that_fails_before_a_checkpoint_leaves_nothing(tmp_path, cli, shower_file, monkeypatch):
    monkeypatch.setattr(loop, "write_checkpoint", _killed)
    assert cli(*_train(tmp_path / "a" / "run", shower_file))[0] == 130
    assert not (tmp_path / "a" / "run").exists()


def test_evaluate_leaves_no_directory_on_bad_input(tmp_path, cli, shower_file):
    data = read_showers(shower_file)
    showers = data.showers.copy()
    showers[5, 3] = np.nan
    with h5py.File(tmp_path / "nan.h5", "w") as f:  # structurally valid: the NaN is found while streaming
        f["incident_energies"], f["showers"] = data.energies, showers
    evaluate = ["evaluate", "--geometry", "tiny", "--out", tmp_path / "ev", "--metrics", "hist", "--quiet"]
    status, err = cli(*evaluate, shower_file, tmp_path / "nan.h5")
    assert status == 2 and "holds NaN or inf" in one_error_line(err, "evaluate")
    status, err = cli(*evaluate, tmp_path, shower_file)
    assert status == 2 and "is a directory" in one_error_line(err, "evaluate")
    assert not (tmp_path / "ev").exists()
