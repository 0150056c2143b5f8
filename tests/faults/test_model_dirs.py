"""Damaged model directories, checkpoints and presets: one clear line and exit 2, never a traceback,
never silently empty showers, nothing half-written."""

from __future__ import annotations

import json
import re
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _faults import one_error_line
from safetensors.numpy import load_file, save_file

Damage = Callable[[Path], None]


def _edit_json(name: str, change: Callable[[Any], Any]) -> Damage:
    def damage(d: Path) -> None:
        (d / name).write_text(json.dumps(change(json.loads((d / name).read_text()))))

    return damage


def _edit_tensors(name: str, change: Callable[[dict[str, np.ndarray]], None]) -> Damage:
    def damage(d: Path) -> None:
        tensors = load_file(str(d / name))
        change(tensors)
        save_file(tensors, str(d / name))

    return damage


def _truncate(name: str) -> Damage:
    def damage(d: Path) -> None:
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[: len(data) // 2])

    return damage


def _header_length(d: Path) -> None:
    data = bytearray((d / "weights.safetensors").read_bytes())
    data[:8] = struct.pack("<Q", 2**62)
    (d / "weights.safetensors").write_bytes(bytes(data))


def _first(prefix: str, change: Callable[[np.ndarray], None]) -> Callable[[dict[str, np.ndarray]], None]:
    def apply(tensors: dict[str, np.ndarray]) -> None:
        change(tensors[next(k for k in sorted(tensors) if k.startswith(prefix) and k.endswith("weight"))])

    return apply


def _nan(a: np.ndarray) -> None:
    a.flat[0] = np.nan


def _flip_exponent(a: np.ndarray) -> None:
    a.view(np.uint32)[...] ^= np.uint32(1 << 30)  # every weight of the tensor: ~1e38 where it was ~0.1


DAMAGE: dict[str, tuple[Damage, str]] = {
    "weights truncated": (_truncate("weights.safetensors"), "weights.safetensors cannot be read"),
    "weights header length": (_header_length, "weights.safetensors cannot be read"),
    "preprocessing truncated": (_truncate("preprocessing.safetensors"), "preprocessing files missing or damaged"),
    "config is a list": (_edit_json("config.json", lambda m: [m]), "must hold a JSON object"),
    "config lacks geometry": (_edit_json("config.json", lambda m: {k: v for k, v in m.items() if k != "geometry"}), r"lacks \['geometry'\]"),
    "config lacks layer_dim": (_edit_json("config.json", lambda m: {k: v for k, v in m.items() if k != "layer_dim"}), "lacks"),
    "config lacks model": (_edit_json("config.json", lambda m: {k: v for k, v in m.items() if k != "model"}), "lacks"),
    "layer_dim is a string": (_edit_json("config.json", lambda m: {**m, "layer_dim": "abc"}), "layer_dim must be an integer"),
    "channels is a string": (_edit_json("config.json", lambda m: {**m, "model": {**m["model"], "channels": "ab"}}), "model.channels must be a list of integers"),
    "nfe is a string": (_edit_json("config.json", lambda m: {**m, "model": {**m["model"], "nfe": "2"}}), "model.nfe must be an integer"),
    "threshold is a string": (_edit_json("config.json", lambda m: {**m, "geometry": {**m["geometry"], "threshold": "x"}}), "threshold must be a finite number"),
    "layers is an object": (_edit_json("config.json", lambda m: {**m, "geometry": {**m["geometry"], "layers": {"a": 1}}}), "geometry in config.json is invalid"),
    "terabyte of channels": (_edit_json("config.json", lambda m: {**m, "model": {**m["model"], "channels": [4, 100000]}}), "parameters, more than the limit"),
    "NaN weight": (_edit_tensors("weights.safetensors", _first("ema.shape.", _nan)), "holds NaN or inf"),
    "exponent bits flipped": (_edit_tensors("weights.safetensors", _first("ema.energy.", _flip_exponent)), "networks produced NaN or inf"),
    "e_min NaN": (_edit_json("preprocessing.json", lambda s: {**s, "e_min": float("nan")}), "e_min must be a finite number"),
    "negative voxel scale": (_edit_json("preprocessing.json", lambda s: {**s, "voxel_scale": -1.0}), "scales > 0"),
    "alpha above 1/2": (_edit_json("preprocessing.json", lambda s: {**s, "alpha": 0.7}), "alpha < 0.5"),
    "voxel std NaN": (_edit_tensors("preprocessing.safetensors", lambda t: t["voxel_std"].__setitem__(3, np.nan)), "voxel_std must be finite"),
    "voxel statistics too short": (_edit_tensors("preprocessing.safetensors", lambda t: t.update(voxel_mean=t["voxel_mean"][:-5], voxel_std=t["voxel_std"][:-5])), "voxel statistics have size"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_model_directory_is_one_line_exit_2(case: str, tiny_model: Path, tmp_path: Path, cli) -> None:
    damage, message = DAMAGE[case]
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    damage(model)
    status, err = cli("generate", model, "--n", "2", "--energy", "5GeV", "-o", tmp_path / "out.h5")
    line = one_error_line(err, "generate")
    assert status == 2 and re.search(message, line), line
    assert not (tmp_path / "out.h5").exists()


def test_size_limits_are_configurable(tiny_model: Path) -> None:
    from calogen.models import load
    from calogen.models.generator import ModelError

    with pytest.raises(ModelError, match="more than the limit of 1,000"):
        load(tiny_model, max_parameters=1000)
    with pytest.raises(ModelError, match="voxels, more than the limit of 100"):
        load(tiny_model, max_voxels=100)
    assert load(tiny_model, max_parameters=None, max_voxels=None).geometry.n_voxels == 120


# --- checkpoints ----------------------------------------------------------------------------------
CHECKPOINT_DAMAGE: dict[str, tuple[str, str, str]] = {
    "latest.json is a list": ("latest.json", "[]", "must be"),
    "latest.json path is a number": ("latest.json", '{"step": 2, "path": 5}', "must be"),
    "latest.json escapes": ("latest.json", '{"step": 2, "path": "../../elsewhere"}', "must be"),
    "latest.json points nowhere": ("latest.json", '{"step": 2, "path": "step-00000099"}', "which is missing"),
    "state.json is a list": ("state.json", "[]", "state.json lacks or has malformed"),
    "state.json lacks the preset": ("state.json", '{"step": 2}', r"malformed \['bad_evals', 'best_val'"),
    "state.safetensors truncated": ("state.safetensors", "", "cannot be read"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_DAMAGE))
def test_damaged_checkpoint_is_one_line_exit_2(case: str, tiny_model: Path, shower_file: Path, tmp_path: Path, cli) -> None:
    name, text, message = CHECKPOINT_DAMAGE[case]
    run = tmp_path / "run"
    shutil.copytree(tiny_model, run)
    checkpoints = run / "checkpoints"
    target = checkpoints / name if name == "latest.json" else checkpoints / json.loads((checkpoints / "latest.json").read_text())["path"] / name
    target.write_text(text)
    before = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    status, err = cli("train", "--data", shower_file, "--geometry", "tiny", "--out", run, "--resume", "--no-progress")
    assert status == 2 and re.search(message, one_error_line(err, "train"))
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == before  # nothing touched


# --- presets --------------------------------------------------------------------------------------
PRESETS = {
    "batch_size: abc": ("train: {batch_size: abc}", "train.batch_size must be an integer, got 'abc'"),
    "channels: ab": ("model: {channels: ab}", "model.channels must be a list of integers, got 'ab'"),
    "nfe: null": ("model: {nfe: null}", "model.nfe must be an integer, got None"),
    "lr: .nan": ("train: {lr: .nan}", "train.lr must be a finite number, got nan"),
    "lr: .inf": ("train: {lr: .inf}", "train.lr must be a finite number, got inf"),
    "max_steps: 1.5": ("train: {max_steps: 1.5}", "train.max_steps must be an integer, got 1.5"),
    "batch_size: true": ("train: {batch_size: true}", "train.batch_size must be an integer, got True"),
    "ema_decay: '0.9'": ("train: {ema_decay: '0.9'}", "train.ema_decay must be a finite number, got '0.9'"),
    "emb_dim: 16.0": ("model: {emb_dim: 16.0}", "model.emb_dim must be an integer, got 16.0"),
    "seed: -1": ("train: {seed: -1}", r"train.seed must lie in \[0, 2\*\*63\)"),
    "train: [1]": ("train: [1]", "section 'train' must be a mapping"),
    "terabyte of channels": ("model: {channels: [4, 100000]}", "parameters, more than the limit"),
}


@pytest.mark.parametrize("case", sorted(PRESETS))
def test_bad_preset_fails_before_anything_is_written(case: str, shower_file: Path, tmp_path: Path, cli) -> None:
    text, message = PRESETS[case]
    (tmp_path / "p.yaml").write_text(text + "\n")
    status, err = cli("train", "--data", shower_file, "--geometry", "tiny", "--preset", tmp_path / "p.yaml", "--out", tmp_path / "run", "--no-progress")
    assert status == 2 and re.search(message, one_error_line(err, "train"))
    assert not (tmp_path / "run").exists()
