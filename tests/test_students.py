"""One-step students (consistency, AverageVelocity): they start as their teacher, their losses decrease, they
train reproducibly through ``calogen train --teacher``, and they export to ONNX like any model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from calogen.cli import main
from calogen.errors import CalogenError
from calogen.geometry import Geometry
from calogen.io import ShowerWriter
from calogen.models.generator import load
from calogen.models.pair import ModelPair
from calogen.models.samplers import solve
from calogen.models.energy import EnergyNet
from calogen.models.flow_matching import FlowMatching
from calogen.models.students import INTERVAL_FEATURES, AverageVelocity, ConsistencyModel, interval_features
from calogen.train.config import PRESETS, Preset
from calogen.train.distill import student_preset
from calogen.train.data import BlockLoader
from calogen.train.loop import train
from calogen.train.trainer import Trainer
from calogen.train.one_step import one_step_errors, build_bank

from _model_data import one_thread, toy_showers  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = Geometry.builtin("tiny")
STUDENTS = ("student-consistency", "student-average-velocity")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny flow-matching teacher (40 steps) and its training file."""
    root = tmp_path_factory.mktemp("teacher")
    with ShowerWriter(root / "train.h5", TINY) as w:
        w.append(*toy_showers(TINY, 256, seed=2, e_range=(1e3, 1e4)))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(root / "train.h5", "tiny", "tiny", root / "run")
    finally:
        torch.set_num_threads(before)
    return root


def _quick(preset: str) -> Preset:
    """A student preset with a small one-step energy stage (the built-in one regresses 200k solves for thousands of steps)."""
    spec = PRESETS[preset]
    model = dataclasses.replace(spec.model, energy_width=48, energy_depth=1, radial_width=24, radial_depth=1)
    train = dataclasses.replace(spec.train, one_step_steps=200, one_step_batch_size=64, one_step_lr=3e-3, bank_size=800, eval_every=50)
    return dataclasses.replace(spec, model=model, train=train)


def _student(teacher_dir: Path, preset: str) -> tuple[ModelPair, Preset]:
    model = load(teacher_dir / "run")
    spec = student_preset(PRESETS[preset], model)
    pair = ModelPair(TINY, spec.model, model.preprocessor.layer_dim)
    pair.start_from(model.pair, skip=frozenset({"energy", "radial"}))  # those are regressed on the teacher's solves
    return pair.eval(), spec


@pytest.mark.parametrize("preset", STUDENTS)
def test_a_new_student_generates_what_its_teacher_does_in_one_step(teacher, preset):
    model = load(teacher / "run")
    student, spec = _student(teacher, preset)
    x, cond = torch.randn(5, TINY.n_voxels), torch.rand(5, 1 + model.preprocessor.layer_dim)
    with torch.no_grad():
        one_step = solve(model.pair.shape, x, [1.0, 0.0], sampler="euler", nfe=1, cond=cond)
        mine = solve(student.shape, x, [1.0, 0.0], sampler=spec.model.sampler, nfe=1, cond=cond)
    torch.testing.assert_close(mine, one_step, rtol=1e-6, atol=1e-6)
    assert student.shape.teacher is not None and student.energy.teacher is None and student.radial.teacher is None


def test_interval_features_vanish_without_an_interval_and_tell_intervals_apart():
    t = torch.tensor([0.3, 1.0, 1.0, 0.5])
    r = torch.tensor([0.3, 1.0, 0.0, 0.0])
    f = interval_features(t, r)
    assert f.shape == (4, 3) and (f[:2] == 0).all() and not torch.allclose(f[2], f[3])


class Rotation(FlowMatching):
    """A teacher with curved trajectories: ``dx/dt = A x``, a rotation by 2 radians from ``t = 1`` to 0."""

    def __init__(self) -> None:
        super().__init__(torch.nn.Identity())
        self.register_buffer("a", torch.tensor([[0.0, -2.0], [2.0, 0.0]]))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return x @ self.a.T


@pytest.mark.parametrize(("student", "extra", "sampler"), [(ConsistencyModel, 0, "euler"), (AverageVelocity, INTERVAL_FEATURES, "jump")])
def test_students_learn_a_curved_teachers_flow_map_in_one_step(student, extra, sampler):
    teacher = Rotation()
    torch.manual_seed(0)
    model = student(EnergyNet(2, 1 + extra, width=64, depth=2))
    model.set_teacher(teacher)
    gen = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(128, 2, generator=gen), torch.randn(256, 2, generator=gen)
    exact = noise @ torch.linalg.matrix_exp(-teacher.a).T

    def one_step_error() -> float:
        with torch.no_grad():
            return float((solve(model, noise, [1.0, 0.0], sampler=sampler, nfe=1, cond=torch.zeros(256, 1)) - exact).square().mean())

    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    before, losses = one_step_error(), []
    for _ in range(300):
        loss = model.loss(x0, torch.zeros(128, 1), torch.Generator().manual_seed(0)).mean()
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert one_step_error() < 0.6 * before
    if student is AverageVelocity:  # from a random start its loss falls by orders of magnitude (the consistency loss starts near 0)
        assert np.mean(losses[-20:]) < 0.1 * losses[0]


@pytest.mark.parametrize("preset", STUDENTS)
def test_one_step_energy_networks_learn_the_teachers_solves_and_stay_frozen(teacher, preset, tmp_path):
    model = load(teacher / "run")
    spec = student_preset(_quick(preset), model)
    trainer = Trainer(TINY, spec, model.preprocessor, teacher=model.pair)
    loader = BlockLoader(teacher / "train.h5", TINY, batch_size=32, block_size=64, shuffle_blocks=2, val_fraction=0.1, seed=0)
    trainer.set_energy_pool(loader)
    loader.close()
    bank = build_bank(model.pair, trainer.energy_pool[0], spec.train.bank_size, spec.train.seed)
    held_out = (torch.arange(len(bank) // 20), torch.arange(len(bank.radial) // 20))
    sampler = spec.model.energy_sampler
    before = [float(e) for e in one_step_errors(trainer.raw, bank, *held_out, sampler)]
    records: list[dict[str, float]] = []
    trainer.fit_energy_maps(log=records.append)
    after = [float(e) for e in one_step_errors(trainer.raw, bank, *held_out, sampler)]
    assert after[0] < 0.6 * before[0] and after[1] < 0.6 * before[1], (before, after)
    assert records[-1]["one_step"] == spec.train.one_step_steps and records[-1]["val_energy"] == pytest.approx(after[0], rel=1e-5)
    assert not any(p.requires_grad for p in trainer.raw.energy.parameters()) and trainer.raw.loop_networks == {"shape"}
    for key, value in trainer.raw.energy.state_dict().items():  # the EMA copy validates with the same weights
        torch.testing.assert_close(trainer.ema.energy.state_dict()[key], value, rtol=0, atol=0)

    # a whole run: the stage is recorded, checkpointed at step 0, and the loop leaves those networks alone
    run = train(teacher / "train.h5", "tiny", _quick(preset), tmp_path / "s", max_steps=3, teacher=teacher / "run")
    history = [json.loads(line) for line in (run.directory / "history.jsonl").read_text().splitlines()]
    assert [r["one_step"] for r in history if "one_step" in r] == [50, 100, 150, 200] and history[-1]["step"] == 3
    assert (run.directory / "checkpoints" / "step-00000000").is_dir()
    student = load(run.directory, weights="raw")
    assert (student.config.energy_width, student.config.radial_width) == (48, 24)  # the preset's, not the teacher's (32, 16)
    for key, value in trainer.raw.energy.state_dict().items():
        torch.testing.assert_close(student.pair.energy.state_dict()[key], value, rtol=0, atol=0)


def test_consistency_distillation_loss_decreases_on_a_fixed_batch(teacher):
    model = load(teacher / "run")
    spec = student_preset(PRESETS["student-consistency"], model)
    trainer = Trainer(TINY, spec, model.preprocessor, teacher=model.pair)
    from calogen.io import ShowerFile

    with ShowerFile(teacher / "train.h5", TINY) as f:
        batch = f.read(0, 32)
    tensors = trainer.tensors(batch)
    opt = torch.optim.Adam(trainer.raw.parameters(), lr=2e-3)

    def loss() -> torch.Tensor:
        return sum(part.mean() for part in trainer.raw(*tensors, torch.Generator().manual_seed(0)))  # type: ignore[return-value]

    first = float(loss().detach())
    for _ in range(25):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert float(loss().detach()) < 0.8 * first
    assert all(not p.requires_grad for p in model.pair.parameters())  # the teacher stays frozen


@pytest.mark.parametrize("preset", STUDENTS)
def test_students_train_reproducibly_and_export_to_onnx(teacher, preset, tmp_path):
    runs = [train(teacher / "train.h5", "tiny", _quick(preset), tmp_path / f"s{i}", max_steps=4, teacher=teacher / "run") for i in range(2)]
    a, b = (load(r.directory) for r in runs)
    for key, value in a.pair.state_dict().items():
        torch.testing.assert_close(value, b.pair.state_dict()[key], rtol=0, atol=0)
    assert a.config.objective == PRESETS[preset].model.objective and a.config.channels == load(teacher / "run").config.channels
    record = json.loads((tmp_path / "s0" / "config.json").read_text())["training"]["teacher"]
    assert record["directory"] == str(teacher / "run") and len(record["weights_sha256"]) == 64
    e = np.geomspace(1.2e3, 9e3, 6)
    first = a.sample(e, seed=4)
    np.testing.assert_array_equal(first, a.sample(e, seed=4))
    assert np.isfinite(first).all() and (first.sum(1) > 0).all()
    pytest.importorskip("onnxruntime")
    from calogen.serve.export import export_onnx

    for nfe in (1, 2):
        check = export_onnx(a.export_module(nfe, a.sampler), a.noise_shapes(), tmp_path / f"s{nfe}.onnx", check_energies=e)
        assert check is not None and check.max_rel_diff <= 1e-5


def test_only_average_velocity_models_jump():
    with pytest.raises(CalogenError, match="jump"):
        Preset.from_dict("x", {"model": {"sampler": "jump", "energy_sampler": "jump"}}, base=PRESETS["tiny"])
    assert isinstance(ModelPair(TINY, PRESETS["student-average-velocity"].model, 1 + len(TINY.layers)).shape, AverageVelocity)


def test_teacher_errors_are_one_line_and_resume_needs_the_same_teacher(teacher, tmp_path, capsys):
    with pytest.raises(CalogenError, match="jump sampler needs an average-velocity model"):
        load(teacher / "run").using(sampler="jump")
    base = ["train", "--data", str(teacher / "train.h5"), "--geometry", "tiny", "--no-progress"]
    assert main([*base, "--preset", "tiny", "--teacher", str(teacher / "run"), "--out", str(tmp_path / "a")]) == 2
    assert "student preset" in capsys.readouterr().err
    assert main([*base, "--preset", "student-consistency", "--teacher", str(tmp_path / "none"), "--out", str(tmp_path / "b")]) == 2
    capsys.readouterr()
    quick = tmp_path / "student.json"
    quick.write_text(json.dumps(_quick("student-consistency").to_dict()))
    assert main([*base, "--preset", str(quick), "--teacher", str(teacher / "run"), "--out", str(tmp_path / "c"), "--max-steps", "1"]) == 0
    other = tmp_path / "other"
    train(teacher / "train.h5", "tiny", "tiny", other, max_steps=1)
    assert main([*base, "--teacher", str(other), "--out", str(tmp_path / "c"), "--resume", "--max-steps", "2"]) == 2
    assert "teacher" in capsys.readouterr().err


def test_a_student_reuses_its_teachers_count_network_and_fits_its_own_spectra(teacher, tmp_path, capsys):
    from calogen.models.occupancy import load_occupancy

    fit = ["--steps", "20", "--spectrum-showers", "30"]
    assert main(["fit-occupancy", str(teacher / "run"), "--data", str(teacher / "train.h5"), *fit, "--out", str(tmp_path / "occ")]) == 0
    train(teacher / "train.h5", "tiny", _quick("student-average-velocity"), tmp_path / "s", max_steps=2, teacher=teacher / "run")
    args = ["fit-occupancy", str(tmp_path / "s"), "--data", str(teacher / "train.h5"), *fit, "--nfe", "1", "2"]
    assert main([*args, "--counts-from", str(teacher / "run")]) == 2  # the plain teacher has no occupancy stage
    assert "no occupancy stage" in capsys.readouterr().err
    assert main([*args, "--counts-from", str(tmp_path / "occ")]) == 0
    mine, theirs = load_occupancy(tmp_path / "s", TINY), load_occupancy(tmp_path / "occ", TINY)
    assert mine is not None and theirs is not None
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(mine.state_dict()[key], value, rtol=0, atol=0)
    assert set(mine.config.spectra) == {"jump:2"}  # the default (jump:1) is the stage's own setting
    assert load(tmp_path / "s").occupancy is not None
