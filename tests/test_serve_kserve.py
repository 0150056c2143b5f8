"""KServe v2 over HTTP and gRPC, exercised with the real Triton clients against an in-process server on loopback."""

from __future__ import annotations

import gzip
import http.client as httplib
import json
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import json_format
from test_serve_batching import Gate, PerShowerGenerator
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from calogen.serve import server as serve_server
from calogen.serve.batching import BatchingConfig
from calogen.serve.service import InferenceService

MODEL = "fake"
MAX_BATCH = 16


@pytest.fixture(scope="module")
def gen() -> PerShowerGenerator:
    return PerShowerGenerator()


@pytest.fixture(scope="module")
def running(gen: PerShowerGenerator) -> Iterator[serve_server.RunningServer]:
    service = InferenceService(gen, name=MODEL, batching=BatchingConfig(max_batch_size=MAX_BATCH, max_queue_delay_ms=2), parameters={"nfe": "4"})
    srv = serve_server.start(service, host="127.0.0.1", http_port=0, grpc_port=0, grpc_workers=8)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http(running: serve_server.RunningServer) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{running.http_port}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(running: serve_server.RunningServer) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{running.grpc_port}")
    yield client
    client.close()


def energies(n: int) -> np.ndarray:
    return np.geomspace(1e3, 1e5, n, dtype=np.float32).reshape(n, 1)


def http_infer(client, e: np.ndarray, seed: int | None, *, binary: bool = True, model: str = MODEL, seed_as_input: bool = True):  # type: ignore[no-untyped-def]
    inputs = [httpclient.InferInput("INCIDENT_ENERGY", list(e.shape), "FP32")]
    inputs[0].set_data_from_numpy(e, binary_data=binary)
    params = None
    if seed is not None and seed_as_input:
        inputs.append(httpclient.InferInput("SEED", [1], "INT64"))
        inputs[1].set_data_from_numpy(np.array([seed], np.int64), binary_data=binary)
    elif seed is not None:
        params = {"seed": seed}
    outputs = [httpclient.InferRequestedOutput("SHOWERS", binary_data=binary)]
    return client.infer(model, inputs, outputs=outputs, parameters=params)


def grpc_infer(client, e: np.ndarray, seed: int | None, *, model: str = MODEL, dtype: str = "FP32", seed_as_input: bool = True):  # type: ignore[no-untyped-def]
    inputs = [grpcclient.InferInput("INCIDENT_ENERGY", list(e.shape), dtype)]
    inputs[0].set_data_from_numpy(e)
    params = None
    if seed is not None and seed_as_input:
        inputs.append(grpcclient.InferInput("SEED", [1], "INT64"))
        inputs[1].set_data_from_numpy(np.array([seed], np.int64))
    elif seed is not None:
        params = {"seed": seed}
    return client.infer(model, inputs, outputs=[grpcclient.InferRequestedOutput("SHOWERS")], parameters=params)


# --- metadata, config, health --------------------------------------------------------------------
def test_http_health_metadata_config_index(http, running) -> None:  # type: ignore[no-untyped-def]
    assert http.is_server_live() and http.is_server_ready() and http.is_model_ready(MODEL)
    assert not http.is_model_ready("nope")
    assert http.get_server_metadata()["name"] == "calogen"
    meta = http.get_model_metadata(MODEL)
    assert meta["inputs"][0] == {"name": "INCIDENT_ENERGY", "datatype": "FP32", "shape": [-1, 1]}
    assert meta["outputs"][0] == {"name": "SHOWERS", "datatype": "FP32", "shape": [-1, 120]}
    config = json_format.ParseDict(http.get_model_config(MODEL), mc.ModelConfig())
    assert config == running.service.spec.config()
    assert config.max_batch_size == MAX_BATCH and config.parameters["nfe"].string_value == "4"
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert http.get_model_repository_index() == [{"name": MODEL, "version": "1", "state": "READY"}]


def test_grpc_health_metadata_config_index(grpc, running) -> None:  # type: ignore[no-untyped-def]
    assert grpc.is_server_live() and grpc.is_server_ready() and grpc.is_model_ready(MODEL)
    assert not grpc.is_model_ready("nope")
    meta = grpc.get_model_metadata(MODEL, as_json=True)
    assert meta["outputs"][0] == {"name": "SHOWERS", "datatype": "FP32", "shape": ["-1", "120"]}
    assert grpc.get_model_config(MODEL).config == running.service.spec.config()
    assert [m.name for m in grpc.get_model_repository_index().models] == [MODEL]


# --- inference equals Generator.sample -------------------------------------------------------------
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("seed_as_input", [True, False])
def test_http_infer_matches_generator(http, gen, binary: bool, seed_as_input: bool) -> None:  # type: ignore[no-untyped-def]
    e = energies(5)
    result = http_infer(http, e, 42, binary=binary, seed_as_input=seed_as_input)
    np.testing.assert_array_equal(result.as_numpy("SHOWERS"), gen.sample(e, seed=42))
    assert result.get_response()["parameters"]["seed"] == 42


@pytest.mark.parametrize("seed_as_input", [True, False])
def test_grpc_infer_matches_generator(grpc, gen, seed_as_input: bool) -> None:  # type: ignore[no-untyped-def]
    e = energies(MAX_BATCH)
    result = grpc_infer(grpc, e, 7, seed_as_input=seed_as_input)
    showers = result.as_numpy("SHOWERS")
    assert showers.shape == (MAX_BATCH, 120) and showers.dtype == np.float32
    np.testing.assert_array_equal(showers, gen.sample(e, seed=7))


def test_batched_seed_rows_as_sonic_sends_them(grpc, gen) -> None:  # type: ignore[no-untyped-def]
    e = energies(3)
    inputs = [grpcclient.InferInput("INCIDENT_ENERGY", [3, 1], "FP32"), grpcclient.InferInput("SEED", [3, 1], "INT64")]
    inputs[0].set_data_from_numpy(e)
    inputs[1].set_data_from_numpy(np.full((3, 1), 9, np.int64))
    np.testing.assert_array_equal(grpc.infer(MODEL, inputs).as_numpy("SHOWERS"), gen.sample(e, seed=9))
    inputs[1].set_data_from_numpy(np.array([[9], [9], [8]], np.int64))
    with pytest.raises(InferenceServerException, match="same value") as info:
        grpc.infer(MODEL, inputs)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_request_without_seed_reports_the_seed_it_used(http, grpc, gen) -> None:  # type: ignore[no-untyped-def]
    e = energies(2)
    r1, r2 = http_infer(http, e, None), grpc_infer(grpc, e, None)
    s1, s2 = r1.get_response()["parameters"]["seed"], r2.get_response().parameters["seed"].int64_param
    assert s1 != s2
    np.testing.assert_array_equal(r1.as_numpy("SHOWERS"), gen.sample(e, seed=s1))
    np.testing.assert_array_equal(r2.as_numpy("SHOWERS"), gen.sample(e, seed=s2))


def test_concurrent_http_and_grpc_clients_get_their_own_showers(running, gen) -> None:  # type: ignore[no-untyped-def]
    from concurrent.futures import ThreadPoolExecutor

    def one(k: int) -> bool:
        e = energies(1 + k % 4)
        if k % 2:
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{running.grpc_port}")
            got = grpc_infer(client, e, 1000 + k).as_numpy("SHOWERS")
        else:
            client = httpclient.InferenceServerClient(f"127.0.0.1:{running.http_port}")
            got = http_infer(client, e, 1000 + k).as_numpy("SHOWERS")
        client.close()
        return bool(np.array_equal(got, gen.sample(e, seed=1000 + k)))

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, range(24)))


# --- malformed requests -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("shape", "400", "shape \\[batch, 1\\]"),
        ("dtype", "400", "must be FP32"),
        ("model", "404", "unknown model"),
        ("oversize", "400", "exceeds max_batch_size"),
    ],
)
def test_http_malformed_requests_are_refused(http, gen, case: str, status: str, message: str) -> None:  # type: ignore[no-untyped-def]
    e = {"shape": energies(4).reshape(2, 2), "oversize": energies(MAX_BATCH + 1)}.get(case, energies(2))
    inputs = [httpclient.InferInput("INCIDENT_ENERGY", list(e.shape), "FP64" if case == "dtype" else "FP32")]
    inputs[0].set_data_from_numpy(e.astype(np.float64) if case == "dtype" else e)
    with pytest.raises(InferenceServerException, match=message) as info:
        http.infer("nope" if case == "model" else MODEL, inputs)
    assert info.value.status() == status
    np.testing.assert_array_equal(http_infer(http, energies(1), 3).as_numpy("SHOWERS"), gen.sample(energies(1), seed=3))


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("shape", "StatusCode.INVALID_ARGUMENT", "shape \\[batch, 1\\]"),
        ("dtype", "StatusCode.INVALID_ARGUMENT", "must be FP32"),
        ("model", "StatusCode.NOT_FOUND", "unknown model"),
        ("oversize", "StatusCode.INVALID_ARGUMENT", "exceeds max_batch_size"),
    ],
)
def test_grpc_malformed_requests_are_refused(grpc, gen, case: str, code: str, message: str) -> None:  # type: ignore[no-untyped-def]
    e = {"shape": energies(4).reshape(1, 4), "oversize": energies(MAX_BATCH + 1), "dtype": energies(2).astype(np.float64)}.get(case, energies(2))
    with pytest.raises(InferenceServerException, match=message) as info:
        grpc_infer(grpc, e, 1, model="nope" if case == "model" else MODEL, dtype="FP64" if case == "dtype" else "FP32")
    assert info.value.status() == code
    np.testing.assert_array_equal(grpc_infer(grpc, energies(1), 3).as_numpy("SHOWERS"), gen.sample(energies(1), seed=3))


def test_grpc_metadata_of_unknown_model_is_not_found(grpc) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InferenceServerException) as info:
        grpc.get_model_metadata("nope")
    assert info.value.status() == "StatusCode.NOT_FOUND"


def _post(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    conn = httplib.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", f"/v2/models/{MODEL}/infer", body=body, headers=headers)
    response = conn.getresponse()
    status, payload = response.status, json.loads(response.read())
    conn.close()
    return status, payload


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (b"{not json", {}, "not valid JSON"),
        (b'{"inputs": [{"name": "INCIDENT_ENERGY", "datatype": "FP32", "shape": [1, 1], "parameters": {"binary_data_size": 4}}]}', {}, "binary_data_size"),
        (b'{"inputs": [{"name": "INCIDENT_ENERGY", "datatype": "FP32", "shape": [2, 1], "data": [1.0]}]}', {}, "bytes do not match"),
        (b'{"inputs": [{"name": "ENERGY", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}', {}, "unexpected input 'ENERGY'"),
        (b'{"inputs": [{"name": "INCIDENT_ENERGY", "datatype": "FP32", "shape": [1, 1], "data": [-5.0]}]}', {}, "positive"),
        (b"{}", {"Inference-Header-Content-Length": "99"}, "outside the body"),
    ],
)
def test_http_malformed_bodies_get_400(running, body: bytes, headers: dict[str, str], message: str) -> None:  # type: ignore[no-untyped-def]
    status, payload = _post(running.http_port, body, {"Content-Type": "application/json", **headers})
    assert status == 400 and message in str(payload["error"])


def test_http_gzip_json_request(running, gen) -> None:  # type: ignore[no-untyped-def]
    body = {"inputs": [{"name": "INCIDENT_ENERGY", "datatype": "FP32", "shape": [2, 1], "data": [2000.0, 3000.0]}], "parameters": {"seed": 11}}
    status, payload = _post(running.http_port, gzip.compress(json.dumps(body).encode()), {"Content-Encoding": "gzip"})
    assert status == 200
    out = payload["outputs"][0]  # type: ignore[index]
    expected = gen.sample(np.array([2000.0, 3000.0], np.float32), seed=11)
    np.testing.assert_array_equal(np.asarray(out["data"], np.float32).reshape(out["shape"]), expected)


def test_metrics_and_stats_endpoints(running, http) -> None:  # type: ignore[no-untyped-def]
    http_infer(http, energies(3), 1)
    raw = http_get(running.http_port, "/metrics")
    assert f'calogen_requests_total{{model="{MODEL}",outcome="ok"}}' in raw
    assert "calogen_batch_size_bucket" in raw and "calogen_queue_depth" in raw
    stats = json.loads(http_get(running.http_port, "/stats"))
    assert stats["showers"] >= 3 and stats["requests"]["ok"] >= 1


def http_get(port: int, path: str) -> str:
    conn = httplib.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    text = conn.getresponse().read().decode()
    conn.close()
    return text


# --- back-pressure and shutdown ----------------------------------------------------------------------
def test_full_queue_gives_503_and_resource_exhausted_then_drains(gen) -> None:  # type: ignore[no-untyped-def]
    gate = Gate(gen.sample_many)
    service = InferenceService(gen, name=MODEL, batching=BatchingConfig(max_batch_size=4, max_queue_size=1, max_queue_delay_ms=0), sample_many=gate)
    srv = serve_server.start(service, http_port=0, grpc_port=0, grpc_workers=4)
    hc = httpclient.InferenceServerClient(f"127.0.0.1:{srv.http_port}", concurrency=2)
    hc2 = httpclient.InferenceServerClient(f"127.0.0.1:{srv.http_port}")
    gc = grpcclient.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    try:
        inputs = [httpclient.InferInput("INCIDENT_ENERGY", [1, 1], "FP32")]
        inputs[0].set_data_from_numpy(energies(1))
        first = hc.async_infer(MODEL, inputs, parameters={"seed": 1})  # runs, held by the gate
        assert gate.entered.wait(10)
        second = hc.async_infer(MODEL, inputs, parameters={"seed": 2})  # waits in the queue
        while service.batcher.stats.snapshot()["queue_depth"] < 1:
            gate.entered.wait(0.01)
        with pytest.raises(InferenceServerException) as info:
            http_infer(hc2, energies(1), 3)
        assert info.value.status() == "503"
        with pytest.raises(InferenceServerException) as info:
            grpc_infer(gc, energies(1), 3)
        assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        gate.release.set()
        np.testing.assert_array_equal(second.get_result().as_numpy("SHOWERS"), gen.sample(energies(1), seed=2))
        np.testing.assert_array_equal(first.get_result().as_numpy("SHOWERS"), gen.sample(energies(1), seed=1))
    finally:
        gate.release.set()
        hc.close()
        hc2.close()
        gc.close()
        srv.stop()
    assert not service.ready
