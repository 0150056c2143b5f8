"""ONNX export and Triton repository: onnxruntime matches PyTorch, config.pbtxt parses and agrees with the graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

import calogen
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
    path = tmp_path / "toy.onnx"
    check = export_onnx(module, NOISE, path, check_energies=np.geomspace(1e3, 1e6, 5))
    assert check is not None and check.batch == 5 and check.max_rel_diff < 1e-4
    for batch in (1, 7):
        check = check_onnx(path, module, NOISE, np.geomspace(1e3, 1e6, batch), seed=batch)
        assert check.batch == batch and check.max_rel_diff < 1e-4
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["INCIDENT_ENERGY", "NOISE_ENERGY", "NOISE_SHAPE"]
    assert [o.name for o in graph.output] == ["SHOWERS"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_triton_repository_config_parses_and_agrees_with_graph(tmp_path: Path) -> None:
    settings = TritonSettings(max_batch_size=128, preferred_batch_size=32, max_queue_delay_us=500, instances=2, kind="gpu")
    folder, check = write_repository(ToyPipeline(), NOISE, VOXELS, tmp_path / "repo", name="toy", settings=settings, parameters={"nfe": "2"})
    assert check is None
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
    folder, _ = write_repository(ToyPipeline(), NOISE, VOXELS, tmp_path, name="toy")
    text = (folder / "config.pbtxt").read_text()
    (folder / "config.pbtxt").write_text(text.replace(f"dims: {VOXELS}", f"dims: {VOXELS + 1}"))
    with pytest.raises(RepositoryError, match="NOISE_SHAPE"):
        check_repository(folder)
    (folder / "config.pbtxt").write_text(text.replace("NOISE_ENERGY", "NOISE_E"))
    with pytest.raises(RepositoryError, match="differ from the ONNX graph"):
        check_repository(folder)
    (folder / "config.pbtxt").write_text(text.replace('name: "toy"', 'name: "other"'))
    with pytest.raises(RepositoryError, match="its folder name"):
        check_repository(folder)
    (folder / "config.pbtxt").write_text("max_batch_size: oops")
    with pytest.raises(RepositoryError, match="does not parse"):
        check_repository(folder)


@pytest.mark.parametrize("bad", [{"max_batch_size": 0}, {"preferred_batch_size": 999}, {"kind": "tpu"}])
def test_triton_settings_reject_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(RepositoryError):
        TritonSettings(**bad)  # type: ignore[arg-type]


# --- the shipped, trained model ------------------------------------------------------------------------------
SHIPPED = Path(calogen.__file__).parent / "data" / "pretrained" / "cpu-small-ds2"


def _graph_vs_sample(onnx_file: Path) -> float:
    """Largest |graph - sample()| over the largest |sample()| for 60 showers at 1-100 GeV on the same noise."""
    import onnxruntime as ort

    from calogen.models import load

    model = load(SHIPPED)
    energies = np.repeat(np.geomspace(1e3, 1e5, 3), 20).astype(np.float32)
    noise_energy, noise_shape = model.draw_noise(energies.size, seed=11)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    feed = {"INCIDENT_ENERGY": energies[:, None], "NOISE_ENERGY": noise_energy, "NOISE_SHAPE": noise_shape}
    got = session.run(["SHOWERS"], feed)[0]
    want = model.sample(energies, seed=11)
    assert np.isfinite(got).all() and ((got > 0) == (want > 0)).all()  # the same voxels pass the threshold
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("fmt", ["onnx", "triton"])
def test_export_of_the_trained_model_passes_its_check_and_matches_sample(fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from calogen.cli import main

    out = tmp_path / ("model.onnx" if fmt == "onnx" else "repo")
    assert main(["export", str(SHIPPED), "--format", fmt, "-o", str(out)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("onnxruntime vs PyTorch on 8 showers"))
    assert float(line.split("relative ")[1].split()[0]) <= 1e-4
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == (["model.onnx"] if fmt == "onnx" else ["config.pbtxt", "model.onnx"])
    if fmt == "triton":  # the same graph as --format onnx, in a repository
        config = check_repository(out / "cpu-small-ds2")
        assert [list(i.dims) for i in config.input] == [[1], [1 + 45 + 2 * 45 * 9], [6480]]  # NOISE_ENERGY: 856 wide (radial + hit counts)
        assert _graph_vs_sample(out / "cpu-small-ds2" / "1" / "model.onnx") <= 1e-4


def test_export_command_reports_a_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from calogen.cli import main

    assert main(["export", str(tmp_path / "none"), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "not a model directory" in capsys.readouterr().err
