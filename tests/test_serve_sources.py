"""Serving real sources: a calogen model (merged and exact modes), the GFLASH engine, and the ``calogen serve`` command."""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from test_serve_batching import Gate

from calogen.errors import CalogenError
from calogen.geometry import Geometry
from calogen.serve import server as serve_server
from calogen.serve.batching import BatchingConfig, batched_sampler
from calogen.serve.service import InferenceService


def make_model_dir(directory: Path) -> Path:
    """Write a small untrained calogen model for the ``tiny`` geometry (Euler sampler, NFE 2), trained range 1-100 GeV."""
    import torch

    from calogen.models.config import ModelConfig
    from calogen.models.generator import save_model
    from calogen.models.pair import ModelPair
    from calogen.models.preprocess import Preprocessor

    geometry = Geometry.builtin("tiny")
    rng = np.random.default_rng(0)
    energies = np.geomspace(1e3, 1e5, 64).astype(np.float32)
    showers = (rng.random((64, geometry.n_voxels)) * energies[:, None] / geometry.n_voxels).astype(np.float32)
    preprocessor = Preprocessor.fit(geometry, energies, showers, radial=True)
    config = ModelConfig(channels=(8, 16), emb_dim=16, energy_width=32, energy_depth=1, radial_width=8, radial_depth=1, sampler="euler", nfe=2)
    torch.manual_seed(0)
    pair = ModelPair(geometry, config, preprocessor.layer_dim)
    save_model(directory, geometry=geometry, config=config, preprocessor=preprocessor, raw=pair, ema=copy.deepcopy(pair))
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("serve") / "tiny-model")


def grpc_request(e: np.ndarray, seed: int) -> list:  # type: ignore[type-arg]
    inputs = [grpcclient.InferInput("INCIDENT_ENERGY", [e.size, 1], "FP32"), grpcclient.InferInput("SEED", [1], "INT64")]
    inputs[0].set_data_from_numpy(e.reshape(-1, 1))
    inputs[1].set_data_from_numpy(np.array([seed], np.int64))
    return inputs


def test_model_requests_merge_into_one_network_pass(model_dir: Path) -> None:
    from calogen.models import load

    model = load(model_dir)
    gate = Gate(batched_sampler(model))
    service = InferenceService(model, name="tiny", batching=BatchingConfig(max_batch_size=8, max_queue_delay_ms=0), sample_many=gate)
    requests = [(np.array([3e3], np.float32), 1), (np.array([5e3, 2e4], np.float32), 2), (np.array([8e3, 1e4, 4e4], np.float32), 3)]
    with serve_server.start(service, http_port=0, grpc_port=0, grpc_workers=4) as srv:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
        answers: list = [None] * 3  # type: ignore[type-arg]

        def keep(i: int):  # type: ignore[no-untyped-def]
            return lambda result, error: answers.__setitem__(i, error or result.as_numpy("SHOWERS"))

        client.async_infer("tiny", grpc_request(*requests[0]), keep(0))
        assert gate.entered.wait(30)
        for i in (1, 2):
            client.async_infer("tiny", grpc_request(*requests[i]), keep(i))
        while service.batcher.stats.snapshot()["queue_depth"] < 2:
            time.sleep(0.01)
        gate.release.set()
        while any(a is None for a in answers):
            time.sleep(0.01)
        client.close()
    assert service.batcher.stats.snapshot()["batch_size_histogram"] == {"1": 1, "5": 1}
    for (e, seed), got in zip(requests, answers):
        want = model.sample(e, seed=seed)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_exact_model_service_is_bit_identical_and_shows_nfe(model_dir: Path) -> None:
    from calogen.models import load

    model = load(model_dir)
    service = InferenceService.from_source(model_dir, nfe=2, exact=True, batching=BatchingConfig(max_batch_size=4))
    with serve_server.start(service, http_port=0, grpc_port=0, grpc_workers=4) as srv:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{srv.http_port}")
        config = client.get_model_config("tiny-model")
        e = np.array([[2e3], [7e4]], np.float32)
        inputs = [httpclient.InferInput("INCIDENT_ENERGY", [2, 1], "FP32")]
        inputs[0].set_data_from_numpy(e)
        got = client.infer("tiny-model", inputs, parameters={"seed": 77}).as_numpy("SHOWERS")
        client.close()
    assert config["parameters"]["nfe"] == {"string_value": "2"} and config["parameters"]["exact"] == {"string_value": "true"}
    np.testing.assert_array_equal(got, model.sample(e, seed=77, nfe=2))


def test_model_service_serves_its_training_range(model_dir: Path) -> None:
    from calogen.serve.protocol import InferenceError, InputTensor

    with InferenceService.from_source(model_dir) as service:
        assert service.spec.energy_range == pytest.approx((1e3 * 0.999, 1e5 * 1.001))
        outside = InputTensor("INCIDENT_ENERGY", "FP32", (1, 1), np.array([[2e5]], np.float32))
        with pytest.raises(InferenceError, match="outside the range"):
            service.submit("tiny-model", "", [outside], {})


def test_gflash_service_matches_engine() -> None:
    from calogen.sim.engines import make_engine

    service = InferenceService.from_source(engine="gflash", geometry="tiny", batching=BatchingConfig(max_batch_size=8))
    with serve_server.start(service, http_port=0, grpc_port=0, grpc_workers=4) as srv:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
        e = np.array([1e3, 5e3, 2e4], np.float32)
        got = client.infer("gflash", grpc_request(e, 5)).as_numpy("SHOWERS")
        client.close()
    np.testing.assert_array_equal(got, make_engine("gflash", "tiny", "e-").sample(e, seed=5))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({}, "either a model directory or --engine"), ({"engine": "gflash"}, "needs --geometry"), ({"engine": "warp", "geometry": "tiny"}, "unknown engine")],
)
def test_from_source_explains_bad_choices(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(CalogenError, match=message):
        InferenceService.from_source(**kwargs)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_command_serves_then_drains_on_sigterm() -> None:
    http_port, grpc_port = _free_port(), _free_port()
    cmd = [sys.executable, "-m", "calogen.cli", "serve", "--engine", "gflash", "--geometry", "tiny", "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        try:
            lines = iter(proc.stdout.readline, "")  # type: ignore[union-attr]
            assert any(line.startswith("serving 'gflash' on http://127.0.0.1:") for line in lines)
            client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
            assert client.is_server_ready() and client.is_model_ready("gflash")
            inputs = [httpclient.InferInput("INCIDENT_ENERGY", [1, 1], "FP32")]
            inputs[0].set_data_from_numpy(np.array([[4e3]], np.float32))
            assert client.infer("gflash", inputs).as_numpy("SHOWERS").shape == (1, 120)
            client.close()
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0
    assert "final stats" in out and "'ok': 1" in out
