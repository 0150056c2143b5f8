"""Multi-process training on the CPU (gloo): two processes give the same weights on both ranks and the same
weights as one process training the same global batch in two shards, for a flow-matching model and for a
student with the one-step energy stage; rank 0 alone writes; a run resumes under ``torchrun``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from _model_data import one_thread, toy_showers  # noqa: F401
from safetensors.torch import load_file, save_file

from calogen.errors import CalogenError
from calogen.geometry import Geometry
from calogen.io import write_showers
from calogen.train.config import PRESETS, Preset
from calogen.train.loop import train
from calogen.train.trainer import check_shards

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = Geometry.builtin("tiny")
PRESET = replace(PRESETS["tiny"], train=replace(PRESETS["tiny"].train, max_steps=4, warmup_steps=5))
"""Four steps, all in the warm-up (whose learning rate does not depend on ``max_steps``), so a run stopped
after two steps and resumed to four repeats the four-step run."""
STUDENT = Preset.from_dict("student", {"train": {
    "batch_size": 32, "energy_batch_size": 64, "max_steps": 1, "one_step_steps": 3, "one_step_batch_size": 64, "bank_size": 256,
}}, base=PRESETS["student-consistency"])  # fmt: skip
"""A one-step student of the tiny model: three steps of the energy-map regression, one of the shape network."""
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
"""Weights after a few AdamW steps: the two processes and the two shards of one process compute the same
float32 operations on the same rows and noise; only the summation of the two shards' gradients happens in
another place (gloo's all-reduce instead of autograd's accumulation), which may change the last bit of a
gradient, and AdamW's division by ``sqrt(v)`` can magnify that for parameters whose gradients are tiny."""


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    write_showers(path, *toy_showers(TINY, 200, seed=0))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: Path, runs: list[tuple[Path, dict]], log: Path) -> None:
    """One of ``world`` training processes: trains ``runs`` (directory, keyword arguments of ``train``), records
    which rank writes checkpoints and saves each run's final state as ``rank<R>-<directory name>.safetensors``."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from calogen.train import loop

    trainers = []

    class Recorded(loop.Trainer):  # type: ignore[name-defined,misc]
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)

    def write_checkpoint(run_dir, step, *args, **kwargs):
        (log / f"checkpoint-rank{rank}-{Path(run_dir).name}-step{step}").touch()
        return real(run_dir, step, *args, **kwargs)

    real, loop.write_checkpoint, loop.Trainer = loop.write_checkpoint, write_checkpoint, Recorded
    try:
        for out, kwargs in runs:
            loop.train(data, "tiny", out=out, **kwargs)
            save_file({k: v.contiguous() for k, v in trainers[-1].state()[0].items()}, str(log / f"rank{rank}-{out.name}.safetensors"))
    finally:
        torch.distributed.destroy_process_group()


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    tensors = load_file(str(model_dir / "checkpoints" / json.loads((model_dir / "checkpoints" / "latest.json").read_text())["path"] / "state.safetensors"))
    return {k: v for k, v in tensors.items() if k.startswith(("raw.", "ema."))}


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "history.jsonl").read_text().splitlines()]


def test_two_processes_match_each_other_and_one_process(data_file, tmp_path):
    single, teacher = tmp_path / "single", tmp_path / "teacher"
    train(data_file, "tiny", PRESET, single, shards=2)  # one process, the same two shards, four steps
    train(data_file, "tiny", PRESET, teacher, shards=2, max_steps=2)
    train(data_file, "tiny", STUDENT, tmp_path / "student", shards=2, teacher=teacher)
    log, run = tmp_path / "log", tmp_path / "ddp"
    log.mkdir()
    runs = [(run, {"preset": PRESET, "max_steps": 2}), (tmp_path / "ddp-student", {"preset": STUDENT, "teacher": teacher})]
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), data_file, runs, log), nprocs=2)

    assert sorted(p.name for p in log.glob("checkpoint-*")) == [  # (c) rank 0 alone wrote (the student also at step 0)
        "checkpoint-rank0-ddp-step2", "checkpoint-rank0-ddp-student-step0", "checkpoint-rank0-ddp-student-step1"]
    assert json.loads((run / "run.json").read_text())["shards"] == 2
    for name, reference in (("ddp", teacher), ("ddp-student", tmp_path / "student")):
        ranks = [load_file(str(log / f"rank{r}-{name}.safetensors")) for r in (0, 1)]
        for key, value in ranks[0].items():  # (a) model, EMA and optimiser state are the same on both ranks
            torch.testing.assert_close(ranks[1][key], value, rtol=0, atol=0)
        for key, value in _weights(reference).items():  # (b) = one process, same global batch
            torch.testing.assert_close(ranks[0][key], value, **TOLERANCE)

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "calogen.cli", "train",
           "--data", str(data_file), "--geometry", "tiny", "--out", str(run), "--resume", "--max-steps", "4", "--no-progress"]  # fmt: skip
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed, straight = _weights(run), _weights(single)  # (d) resumed under torchrun = four steps in one process
    assert resumed.keys() == straight.keys()
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, **TOLERANCE)
    assert _losses(run) == pytest.approx(_losses(single), rel=1e-5)  # the global batch's loss, logged once per step


def test_shards_must_divide_the_batches_and_match_on_resume(data_file, tmp_path):
    check_shards(PRESET, 4, 2)
    with pytest.raises(CalogenError, match="2 batch shards cannot be spread evenly over 3 training processes"):
        check_shards(PRESET, 2, 3)
    with pytest.raises(CalogenError, match="train.batch_size = 32 does not split into 3"):
        train(data_file, "tiny", PRESET, tmp_path / "three", shards=3)
    train(data_file, "tiny", PRESET, tmp_path / "two", shards=2, max_steps=1)
    with pytest.raises(CalogenError, match="trained with 2 batch shards, not 4"):
        train(data_file, "tiny", None, tmp_path / "two", shards=4, resume=True, max_steps=2)
