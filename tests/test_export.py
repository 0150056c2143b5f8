"""ONNX export and Triton repository: onnxruntime matches PyTorch, config.pbtxt parses and agrees with the graph."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from calogen.geometry import Geometry
from calogen.serve.export import check_onnx, export_onnx
from calogen.serve.triton_repo import RepositoryError, TritonSettings, check_repository, write_repository

VOXELS = 12
NOISE = {"noise_energy": (3,), "noise_shape": (VOXELS,)}


class ToyPipeline(torch.nn.Module):
    """A small module with the export contract: ``(energies (B, 1), noise_energy (B, 3), noise_shape (B, 12)) -> (B, 12)``.

    Two unrolled Euler steps of a conditioned MLP, then a softmax share of the energy, like a real pipeline.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(VOXELS + 4, 32), torch.nn.SiLU(), torch.nn.Linear(32, VOXELS))

    def forward(self, energies: torch.Tensor, noise_energy: torch.Tensor, noise_shape: torch.Tensor) -> torch.Tensor:
        cond = torch.cat([torch.log(energies) / 10, noise_energy], dim=1)
        x = noise_shape
        for t in (1.0, 0.5):
            x = x - 0.5 * self.net(torch.cat([x, cond], dim=1)) * t
        return energies * torch.softmax(x, dim=1)


def test_onnx_matches_pytorch_for_any_batch(tmp_path: Path) -> None:
    module = ToyPipeline().eval()
    path = export_onnx(module, NOISE, tmp_path / "toy.onnx")
    for batch in (1, 7):
        check = check_onnx(path, module, NOISE, np.geomspace(1e3, 1e6, batch), seed=batch)
        assert check.batch == batch and check.max_rel_diff < 1e-4
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["INCIDENT_ENERGY", "NOISE_ENERGY", "NOISE_SHAPE"]
    assert [o.name for o in graph.output] == ["SHOWERS"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_triton_repository_config_parses_and_agrees_with_graph(tmp_path: Path) -> None:
    settings = TritonSettings(max_batch_size=128, preferred_batch_size=32, max_queue_delay_us=500, instances=2, kind="gpu")
    folder = write_repository(ToyPipeline(), NOISE, VOXELS, tmp_path / "repo", name="toy", settings=settings, parameters={"nfe": "2"})
    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "repo").rglob("*") if p.is_file()) == [
        "repo/toy/1/model.onnx",
        "repo/toy/config.pbtxt",
    ]
    config = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())
    assert config.name == "toy" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 128
    assert [(i.name, list(i.dims), i.data_type) for i in config.input] == [
        ("INCIDENT_ENERGY", [1], mc.TYPE_FP32),
        ("NOISE_ENERGY", [3], mc.TYPE_FP32),
        ("NOISE_SHAPE", [VOXELS], mc.TYPE_FP32),
    ]
    assert [(o.name, list(o.dims)) for o in config.output] == [("SHOWERS", [VOXELS])]
    assert list(config.dynamic_batching.preferred_batch_size) == [32] and config.dynamic_batching.max_queue_delay_microseconds == 500
    assert config.instance_group[0].count == 2 and config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert config.parameters["nfe"].string_value == "2"
    assert check_repository(folder) == config


def test_check_repository_catches_disagreement(tmp_path: Path) -> None:
    folder = write_repository(ToyPipeline(), NOISE, VOXELS, tmp_path, name="toy")
    text = (folder / "config.pbtxt").read_text()
    (folder / "config.pbtxt").write_text(text.replace(f"dims: {VOXELS}", f"dims: {VOXELS + 1}"))
    with pytest.raises(RepositoryError, match="NOISE_SHAPE"):
        check_repository(folder)
    (folder / "config.pbtxt").write_text(text.replace("NOISE_ENERGY", "NOISE_E"))
    with pytest.raises(RepositoryError, match="differ from the ONNX graph"):
        check_repository(folder)
    (folder / "config.pbtxt").write_text("max_batch_size: oops")
    with pytest.raises(RepositoryError, match="does not parse"):
        check_repository(folder)


@pytest.mark.parametrize("bad", [{"max_batch_size": 0}, {"preferred_batch_size": 999}, {"kind": "tpu"}])
def test_triton_settings_reject_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(RepositoryError):
        TritonSettings(**bad)  # type: ignore[arg-type]


# --- a real calogen model (random weights, fitted preprocessing) ------------------------------------------
def make_model_dir(directory: Path) -> Path:
    """Write a small untrained calogen model for the ``tiny`` geometry (Euler sampler, NFE 2) into ``directory``."""
    models = pytest.importorskip("calogen.models.generator")
    from calogen.models.config import ModelConfig
    from calogen.models.preprocess import Preprocessor

    geometry = Geometry.builtin("tiny")
    rng = np.random.default_rng(0)
    energies = np.geomspace(1e3, 1e5, 64).astype(np.float32)
    showers = (rng.random((64, geometry.n_voxels)) * energies[:, None] / geometry.n_voxels).astype(np.float32)
    preprocessor = Preprocessor.fit(geometry, energies, showers, radial=True)
    config = ModelConfig(channels=(8, 16), emb_dim=16, energy_width=32, energy_depth=1, radial_width=8, radial_depth=1, sampler="euler", nfe=2)
    torch.manual_seed(0)
    pair = models.ModelPair(geometry, config, preprocessor.layer_dim)
    models.save_model(directory, geometry=geometry, config=config, preprocessor=preprocessor, raw=pair, ema=copy.deepcopy(pair))
    return directory


def test_export_command_writes_a_checked_triton_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from calogen.cli import main
    from calogen.models import load

    model_dir = make_model_dir(tmp_path / "tiny-model")
    assert main(["export", str(model_dir), "--format", "triton", "-o", str(tmp_path / "repo"), "--max-batch-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime vs PyTorch on 4 showers" in out
    folder = tmp_path / "repo" / "tiny-model"
    config = check_repository(folder)
    model = load(model_dir)
    assert config.max_batch_size == 32 and config.parameters["nfe"].string_value == "2"
    assert [list(i.dims) for i in config.input] == [[1], [model.preprocessor.layer_dim + model.preprocessor.radial_dim], [model.geometry.n_voxels]]
    check = check_onnx(folder / "1" / "model.onnx", model.export_module(2), model.noise_shapes(), np.geomspace(2e3, 5e4, 6), seed=3)
    assert check.max_rel_diff < 1e-4


def test_export_command_reports_a_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from calogen.cli import main

    assert main(["export", str(tmp_path / "none"), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "not a model directory" in capsys.readouterr().err
