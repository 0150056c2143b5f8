"""The incident direction in exported graphs and in the server: ``INCIDENT_DIRECTION (B, 2)`` (theta, phi) rad."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from _model_data import one_thread  # noqa: F401
from test_direction_model import GEOMETRY, inclined_showers
from tritonclient.utils import InferenceServerException

from calogen.cli import main
from calogen.io import write_showers
from calogen.models.generator import FlowModel, load
from calogen.serve import server as serve_server
from calogen.serve.batching import BatchingConfig
from calogen.serve.export import ExportError, check_onnx, export_onnx
from calogen.serve.protocol import InferenceError, InputTensor
from calogen.serve.service import InferenceService
from calogen.serve.triton_repo import check_repository
from calogen.train.config import Preset
from calogen.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")

FIXED = (0.3, 0.5)
"""Direction (rad) of every training shower of the model not conditioned on the direction."""
ALONG, AGAINST = (0.5, 0.0), (0.5, math.pi)
ENERGIES = np.geomspace(2e3, 5e4, 6).astype(np.float32)


def _train(root: Path, name: str, *, conditioned: bool) -> Path:
    """A model trained for a few steps on inclined showers (mixed directions, or all at :data:`FIXED`)."""
    e, v, d = inclined_showers(200, seed=0, direction=None if conditioned else FIXED)
    write_showers(root / f"{name}.h5", e, v, directions=d)
    settings = {"model": {"directions": conditioned}, "train": {"max_steps": 5, "eval_every": 5, "checkpoint_every": 5}}
    train(root / f"{name}.h5", GEOMETRY, Preset.from_dict(name, settings, base=Preset.resolve("tiny")), root / name)
    return root / name


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[FlowModel, FlowModel]:
    """A direction-conditioned model (default direction: normal incidence) and one trained at :data:`FIXED` only."""
    root = tmp_path_factory.mktemp("export-directions")
    directed, fixed = load(_train(root, "directed", conditioned=True)), load(_train(root, "fixed", conditioned=False))
    assert directed.config.directions and directed.default_direction == (0.0, 0.0)
    assert not fixed.config.directions and fixed.default_direction == pytest.approx(FIXED)
    return directed, fixed


# --- export ---------------------------------------------------------------------------------------------------------
def test_graph_takes_the_direction_and_matches_pytorch(models: tuple[FlowModel, FlowModel], tmp_path: Path) -> None:
    model = models[0]
    path = tmp_path / "directed.onnx"
    check = export_onnx(model.export_module(model.nfe), model.noise_shapes(), path, check_energies=ENERGIES)
    assert check is not None and check.max_rel_diff < 1e-5
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in onnx.load(str(path)).graph.input}
    assert inputs == {"INCIDENT_ENERGY": ["batch", 1], "NOISE_ENERGY": ["batch", 13], "NOISE_SHAPE": ["batch", 57], "INCIDENT_DIRECTION": ["batch", 2]}
    noise_energy, noise_shape = model.draw_noise(ENERGIES.size, seed=4)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = {}
    for direction in (ALONG, AGAINST):
        feed = {"INCIDENT_ENERGY": ENERGIES[:, None], "NOISE_ENERGY": noise_energy, "NOISE_SHAPE": noise_shape,
                "INCIDENT_DIRECTION": np.tile(np.float32(direction), (ENERGIES.size, 1))}  # fmt: skip
        got[direction] = session.run(["SHOWERS"], feed)[0]
        want = model.sample_with_noise(ENERGIES, noise_energy, noise_shape, directions=np.array(direction))
        assert np.abs(got[direction] - want).max() <= 1e-5 * np.abs(want).max()
    assert np.abs(got[ALONG] - got[AGAINST]).max() > 1e-2 * np.abs(got[ALONG]).max()  # the direction changes the showers
    per_shower = check_onnx(path, model.export_module(model.nfe), model.noise_shapes(), ENERGIES, directions=np.array([ALONG, AGAINST] * 3))
    assert per_shower.max_rel_diff < 1e-5


def test_triton_repository_lists_the_direction(models: tuple[FlowModel, FlowModel], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = models[0]
    assert main(["export", str(model.directory), "--format", "triton", "-o", str(tmp_path / "repo"), "--name", "directed"]) == 0
    out = capsys.readouterr().out
    assert "relative" in out and "input INCIDENT_DIRECTION (B, 2) theta, phi rad" in out
    config = check_repository(tmp_path / "repo" / "directed")  # the config agrees with the graph
    assert [(i.name, list(i.dims)) for i in config.input][-1] == ("INCIDENT_DIRECTION", [2])
    assert config.parameters["default_direction_rad"].string_value == "0.0:0.0"


def test_graph_of_a_model_not_conditioned_has_no_direction_input(models: tuple[FlowModel, FlowModel], tmp_path: Path) -> None:
    model = models[1]
    path = tmp_path / "fixed.onnx"
    export_onnx(model.export_module(model.nfe), model.noise_shapes(), path, check_energies=ENERGIES)
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["INCIDENT_ENERGY", "NOISE_ENERGY", "NOISE_SHAPE"]
    with pytest.raises(ExportError, match="not conditioned"):
        check_onnx(path, model.export_module(model.nfe), model.noise_shapes(), ENERGIES, directions=np.array(FIXED))


# --- serving --------------------------------------------------------------------------------------------------------
def _energy(e: np.ndarray) -> InputTensor:
    return InputTensor("INCIDENT_ENERGY", "FP32", (e.size, 1), e.reshape(-1, 1))


def _direction(d: np.ndarray, datatype: str = "FP32") -> InputTensor:
    return InputTensor("INCIDENT_DIRECTION", datatype, d.shape, d)


def _showers(service: InferenceService, *inputs: InputTensor, seed: int = 7) -> np.ndarray:
    future, _ = service.submit(service.spec.name, "", list(inputs), {"seed": seed})
    return future.result(timeout=60)


def test_server_fills_the_default_direction(models: tuple[FlowModel, FlowModel]) -> None:
    model = models[0]
    e = ENERGIES[:3]
    with InferenceService(model, name="directed") as service:
        assert service.spec.metadata()["inputs"][-1] == {"name": "INCIDENT_DIRECTION", "datatype": "FP32", "shape": [-1, 2]}
        assert service.spec.config().parameters["default_direction_rad"].string_value == "0.0:0.0"
        default = _showers(service, _energy(e))
        np.testing.assert_array_equal(default, _showers(service, _energy(e), _direction(np.zeros(2, np.float32))))
        np.testing.assert_array_equal(default, _showers(service, _energy(e), _direction(np.zeros((3, 2), np.float32))))
        np.testing.assert_allclose(default, model.sample(e, seed=7), rtol=1e-5, atol=1e-5 * float(default.max()))
        rows = np.array([ALONG, AGAINST, ALONG], np.float32)
        mixed = _showers(service, _energy(e), _direction(rows))
        np.testing.assert_allclose(mixed, model.sample(e, seed=7, directions=rows), rtol=1e-5, atol=1e-5 * float(mixed.max()))
        assert np.abs(mixed - default).max() > 1e-2 * float(default.max())


def test_exact_server_equals_sample_at_each_direction(models: tuple[FlowModel, FlowModel]) -> None:
    model = models[0]
    e = ENERGIES[:3]
    rows = np.array([ALONG, AGAINST, (0.0, 0.0)], np.float32)
    with InferenceService.from_source(model.directory, name="directed", exact=True) as service:
        np.testing.assert_array_equal(_showers(service, _energy(e), _direction(rows)), model.sample(e, seed=7, directions=rows))
        np.testing.assert_array_equal(_showers(service, _energy(e)), model.sample(e, seed=7))


@pytest.mark.parametrize(
    ("values", "datatype", "message"),
    [
        ([2.0, 0.0], "FP32", "out of range; need 0 <= theta < pi/2"),
        ([-0.1, 0.0], "FP32", "out of range"),
        ([math.nan, 0.0], "FP32", "out of range"),
        ([0.2, 7.0], "FP32", "|phi| <= 2 pi"),
        ([[0.1, 0.0, 0.0]] * 3, "FP32", "one pair or one per shower (3, 2)"),
        ([[0.1, 0.0]] * 2, "FP32", "got shape (2, 2)"),
        ([0.1, 0.0], "FP64", "must be FP32"),
    ],
)
def test_server_refuses_a_bad_direction(models: tuple[FlowModel, FlowModel], values: list[object], datatype: str, message: str) -> None:
    with InferenceService(models[0], name="directed") as service:
        d = np.array(values, np.float64 if datatype == "FP64" else np.float32)
        with pytest.raises(InferenceError, match=re.escape(message)) as err:
            service.submit("directed", "", [_energy(ENERGIES[:3]), _direction(d, datatype)], {})
        assert err.value.http_status == 400 and "\n" not in str(err.value)


def test_model_not_conditioned_takes_only_its_training_direction(models: tuple[FlowModel, FlowModel]) -> None:
    model = models[1]
    e = ENERGIES[:2]
    with InferenceService(model, name="fixed") as service:
        assert [i["name"] for i in service.spec.metadata()["inputs"]] == ["INCIDENT_ENERGY", "SEED"]  # type: ignore[index]
        assert service.spec.config().parameters["default_direction_rad"].string_value == "{!r}:{!r}".format(*model.default_direction)
        default = _showers(service, _energy(e))
        np.testing.assert_array_equal(default, _showers(service, _energy(e), _direction(np.float32(FIXED))))
        with pytest.raises(InferenceError, match=r"not conditioned on the incident direction .* \(0\.3, 0\.5\) rad") as err:
            service.submit("fixed", "", [_energy(e), _direction(np.float32(ALONG))], {})
        assert err.value.http_status == 400


@pytest.fixture(scope="module")
def running(models: tuple[FlowModel, FlowModel]) -> Iterator[serve_server.RunningServer]:
    service = InferenceService(models[0], name="directed", batching=BatchingConfig(max_batch_size=8, max_queue_delay_ms=2))
    srv = serve_server.start(service, host="127.0.0.1", http_port=0, grpc_port=0, grpc_workers=2)
    yield srv
    srv.stop()


def test_http_and_grpc_carry_the_direction(running: serve_server.RunningServer, models: tuple[FlowModel, FlowModel]) -> None:
    e = ENERGIES[:2].reshape(-1, 1)
    d = np.float32([ALONG, AGAINST])
    want = models[0].sample(e, seed=3, directions=d)
    http = httpclient.InferenceServerClient(f"127.0.0.1:{running.http_port}")
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{running.grpc_port}")
    try:
        for client, kind in ((http, httpclient), (grpc, grpcclient)):
            inputs = [kind.InferInput("INCIDENT_ENERGY", list(e.shape), "FP32"), kind.InferInput("INCIDENT_DIRECTION", list(d.shape), "FP32")]
            inputs[0].set_data_from_numpy(e)
            inputs[1].set_data_from_numpy(d)
            got = client.infer("directed", inputs, parameters={"seed": 3}).as_numpy("SHOWERS")
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(want.max()))
        bad = httpclient.InferInput("INCIDENT_DIRECTION", [2], "FP32")
        bad.set_data_from_numpy(np.float32([2.0, 0.0]))
        energy = httpclient.InferInput("INCIDENT_ENERGY", list(e.shape), "FP32")
        energy.set_data_from_numpy(e)
        with pytest.raises(InferenceServerException, match="out of range") as err:
            http.infer("directed", [energy, bad])
        assert err.value.status() == "400"
    finally:
        http.close()
        grpc.close()
