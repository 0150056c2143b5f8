"""Items 5 and 6 of issue 11 (and the serve cases of item 7): one request cannot exhaust the server, and
the server speaks Triton's protocol where the issue found gaps. Every case runs against a real server on
loopback with the real Triton clients; nothing here depends on machine speed."""

from __future__ import annotations

import gzip
import http.client as httplib
import json
import socket
import threading
import tracemalloc
import zlib
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from _faults import one_error_line
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from calogen.errors import CalogenError
from calogen.generator import derive_seed
from calogen.geometry import Geometry
from calogen.serve import server as serve_server
from calogen.serve.batching import BatchingConfig
from calogen.serve.kserve_http import _inflate
from calogen.serve.limits import DEFAULT_ENERGY_RANGE_MEV, RequestLimits, generator_energy_range, parse_energy_range
from calogen.serve.protocol import SERVER_EXTENSIONS, InferenceError, InputTensor, PayloadTooLarge
from calogen.serve.service import InferenceService

MODEL = "fake"
LIMITS = RequestLimits(energy_range=(1e3, 1e5), max_body_bytes=64 << 10, max_inflated_bytes=256 << 10)


class CountingGenerator:
    """Deterministic showers from ``derive_seed(seed, i)``; records every energy it was asked for."""

    def __init__(self) -> None:
        self.geometry = Geometry.builtin("tiny")
        self.asked: list[float] = []
        self.gate: threading.Event | None = None  # when set, sample waits for it

    def sample(self, energies: np.ndarray, *, seed: int, batch_size: int | None = None) -> np.ndarray:
        energies = np.asarray(energies, dtype=np.float32).reshape(-1)
        if self.gate is not None:
            assert self.gate.wait(30)
        self.asked += energies.tolist()
        rows = [np.random.default_rng(derive_seed(seed, i)).random(self.geometry.n_voxels) * e for i, e in enumerate(energies)]
        return np.asarray(rows, dtype=np.float32).reshape(-1, self.geometry.n_voxels)


@pytest.fixture(scope="module")
def gen() -> CountingGenerator:
    return CountingGenerator()


@pytest.fixture(scope="module")
def running(gen: CountingGenerator) -> Iterator[serve_server.RunningServer]:
    service = InferenceService(gen, name=MODEL, batching=BatchingConfig(max_batch_size=8, max_queue_delay_ms=1), limits=LIMITS)
    srv = serve_server.start(service, http_port=0, grpc_port=0, grpc_workers=8)
    yield srv
    srv.stop()


def body(data: object, *, seed: int = 1) -> bytes:
    n = len(data) if isinstance(data, list) else 1
    return json.dumps({"inputs": [{"name": "INCIDENT_ENERGY", "datatype": "FP32", "shape": [n, 1], "data": data}], "parameters": {"seed": seed}}).encode()


def post(port: int, payload: bytes, headers: dict[str, str] | None = None, *, path: str = f"/v2/models/{MODEL}/infer") -> tuple[int, str, dict]:  # type: ignore[type-arg]
    conn = httplib.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", path, body=payload, headers=headers or {})
    response = conn.getresponse()
    status, ctype, raw = response.status, response.getheader("content-type", ""), response.read()
    conn.close()
    return status, ctype, json.loads(raw)


def grpc_infer(port: int, e: np.ndarray, **kwargs):  # type: ignore[no-untyped-def]
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    inputs = [grpcclient.InferInput("INCIDENT_ENERGY", list(e.shape), "FP32")]
    inputs[0].set_data_from_numpy(e)
    try:
        return client.infer(MODEL, inputs, parameters={"seed": 3}, **kwargs)
    finally:
        client.close()


def served_ok(srv: serve_server.RunningServer, gen: CountingGenerator) -> None:
    """The server still answers a normal request correctly."""
    status, _, payload = post(srv.http_port, body([2e3, 3e3], seed=9))
    assert status == 200
    out = payload["outputs"][0]
    np.testing.assert_array_equal(np.asarray(out["data"], np.float32).reshape(out["shape"]), gen.sample(np.array([2e3, 3e3]), seed=9))


# --- item 5: limits ----------------------------------------------------------------------------------
@pytest.mark.parametrize("energy", [1e9, 1e38, 999.0])
def test_energy_outside_the_served_range_is_refused_before_any_work(running, gen, energy: float) -> None:  # type: ignore[no-untyped-def]
    asked = len(gen.asked)
    status, ctype, payload = post(running.http_port, body([5e3, energy]))
    assert (status, ctype) == (400, "application/json")
    assert "outside the range [1000, 100000] MeV" in payload["error"] and "--energy-range" in payload["error"]
    with pytest.raises(InferenceServerException, match="outside the range") as info:
        grpc_infer(running.grpc_port, np.array([[energy]], np.float32))
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert len(gen.asked) == asked  # the generator never saw the request
    served_ok(running, gen)


def test_energy_range_comes_from_the_model_or_the_override() -> None:
    class Trained(CountingGenerator):
        class preprocessor:  # noqa: N801 - stands in for a fitted Preprocessor
            e_min, e_max = 2e3, 5e4

    assert generator_energy_range(Trained()) == pytest.approx((2e3 * 0.999, 5e4 * 1.001))
    assert generator_energy_range(CountingGenerator()) == DEFAULT_ENERGY_RANGE_MEV
    overridden = InferenceService(Trained(), limits=RequestLimits(energy_range=parse_energy_range("1GeV:1TeV")))
    assert overridden.spec.energy_range == (1e3, 1e6)
    assert overridden.spec.config().parameters["energy_range_mev"].string_value == "1000:1e+06"
    overridden.close()
    for bad in ("1GeV", "5GeV:1GeV", "0:1TeV", "1GeV:abc"):
        with pytest.raises(CalogenError):
            parse_energy_range(bad)


@pytest.mark.parametrize("factor", [2, 128])
def test_body_larger_than_the_limit_gets_413(running, gen, factor: int) -> None:  # type: ignore[no-untyped-def]
    padded = body([5e3])[:-1] + b', "pad": "' + b"x" * (LIMITS.max_body_bytes * factor) + b'"}'
    status, ctype, payload = post(running.http_port, padded, {"Content-Type": "application/json"})
    assert (status, ctype) == (413, "application/json") and "--max-body-bytes" in payload["error"]
    served_ok(running, gen)


def test_chunked_body_beyond_the_limit_gets_413(running) -> None:  # type: ignore[no-untyped-def]
    conn = httplib.HTTPConnection("127.0.0.1", running.http_port, timeout=30)
    conn.request("POST", f"/v2/models/{MODEL}/infer", body=iter([b" " * 16384] * 8), encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413 and "exceeds" in json.loads(response.read())["error"]
    conn.close()


def test_body_declared_beyond_the_limit_is_refused_unread(running) -> None:  # type: ignore[no-untyped-def]
    with socket.create_connection(("127.0.0.1", running.http_port), timeout=30) as sock:
        declared = 10 * 2**30
        sock.sendall(f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n".encode())
        assert sock.recv(64).startswith(b"HTTP/1.1 413")  # answered although no body byte was sent


def _gzip_bomb(inflated: int) -> bytes:
    """Concatenated gzip members of zeros that inflate to ``inflated`` bytes (about 1000:1)."""
    member = gzip.compress(bytes(1 << 20))
    return member * (inflated >> 20)


def test_gzip_bomb_gets_413(running, gen) -> None:  # type: ignore[no-untyped-def]
    bomb = _gzip_bomb(32 << 20)
    assert len(bomb) < LIMITS.max_body_bytes
    status, _, payload = post(running.http_port, bomb, {"Content-Encoding": "gzip"})
    assert status == 413 and "--max-inflated-bytes" in payload["error"]
    deflated = zlib.compress(bytes(8 << 20), 9)
    status, _, payload = post(running.http_port, deflated, {"Content-Encoding": "deflate"})
    assert status == 413
    served_ok(running, gen)


def test_inflating_a_bomb_never_holds_more_than_the_limit() -> None:
    bomb = _gzip_bomb(1 << 30)  # 1 GiB of zeros in about 1 MB
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge):
            _inflate(bomb, "gzip", 4 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * (4 << 20)


def test_inflate_reads_every_gzip_member_and_refuses_broken_streams() -> None:
    two = gzip.compress(b'{"a": ') + gzip.compress(b"1}")
    assert _inflate(two, "gzip", 1 << 20) == b'{"a": 1}'
    with pytest.raises(InferenceError, match="truncated"):
        _inflate(gzip.compress(b"x" * 1000)[:-12], "gzip", 1 << 20)
    with pytest.raises(InferenceError, match="cannot decompress"):
        _inflate(b"not gzip", "gzip", 1 << 20)
    with pytest.raises(InferenceError, match="unsupported Content-Encoding"):
        _inflate(b"", "br", 1 << 20)


def test_grpc_message_beyond_the_limit_is_resource_exhausted(running, gen) -> None:  # type: ignore[no-untyped-def]
    big = np.full((LIMITS.max_body_bytes // 2, 1), 5e3, np.float32)  # 2x the limit in raw bytes
    for compression in (None, "gzip"):
        with pytest.raises(InferenceServerException, match="larger than max") as info:
            grpc_infer(running.grpc_port, big, compression_algorithm=compression)
        assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    served_ok(running, gen)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"inputs": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "nested too deeply"),
        (body(["10000"]), "JSON numbers"),
        (body([True]), "JSON numbers"),
        (body([None]), "JSON numbers"),
        (body([[5e3], [6e3, 7e3]]), "JSON numbers"),
    ],
)
def test_malformed_json_gets_a_400_json_error(running, gen, payload: bytes, message: str) -> None:  # type: ignore[no-untyped-def]
    status, ctype, answer = post(running.http_port, payload)
    assert (status, ctype) == (400, "application/json") and message in answer["error"]
    served_ok(running, gen)


def test_shapes_whose_size_overflows_int64_are_refused(running) -> None:  # type: ignore[no-untyped-def]
    head = {"inputs": [{"name": "INCIDENT_ENERGY", "datatype": "FP32", "shape": [2**32, 2**32], "parameters": {"binary_data_size": 0}}]}
    raw = json.dumps(head).encode()
    status, _, answer = post(running.http_port, raw, {"Inference-Header-Content-Length": str(len(raw))})
    assert status == 400 and "bytes do not match shape" in answer["error"]
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="INCIDENT_ENERGY", datatype="FP32", shape=[2**62, 4])
    request.raw_input_contents.append(b"")
    with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
        with pytest.raises(grpc.RpcError) as info:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "bytes do not match shape" in info.value.details()


@pytest.mark.parametrize("seed", [-1, 2**64 + 5])
def test_seeds_outside_63_bits_are_refused(running, seed: int) -> None:  # type: ignore[no-untyped-def]
    status, _, answer = post(running.http_port, body([5e3], seed=seed))
    assert status == 400 and "[0, 2**63)" in answer["error"]


def test_accepted_http_connections_have_tcp_nodelay(running) -> None:  # type: ignore[no-untyped-def]
    conn = httplib.HTTPConnection("127.0.0.1", running.http_port, timeout=10)
    try:
        conn.request("GET", "/v2/health/live")
        assert conn.getresponse().read() == b""  # the connection stays open (keep-alive)
        mine = conn.sock.getsockname()
        server_side = [c for c in running._http.server_state.connections if tuple(c.client) == mine]  # type: ignore[attr-defined]
        assert len(server_side) == 1
        sock = server_side[0].transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        conn.close()


# --- item 6: protocol ------------------------------------------------------------------------------
def test_statistics_count_requests_showers_batches_and_failures(gen) -> None:  # type: ignore[no-untyped-def]
    service = InferenceService(gen, name=MODEL, batching=BatchingConfig(max_batch_size=8, max_queue_delay_ms=0), limits=LIMITS)
    with serve_server.start(service, http_port=0, grpc_port=0, grpc_workers=4) as srv:
        for n in (1, 3, 3):
            assert post(srv.http_port, body([5e3] * n))[0] == 200
        grpc_infer(srv.grpc_port, np.full((2, 1), 5e3, np.float32))
        assert post(srv.http_port, body([1e9]))[0] == 400  # a failed request of this model
        assert post(srv.http_port, body([5e3]), path="/v2/models/other/infer")[0] == 404  # not this model's
        http = httpclient.InferenceServerClient(f"127.0.0.1:{srv.http_port}")
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
        over_http = http.get_inference_statistics(MODEL)
        over_grpc = json_format.MessageToDict(grpc.get_inference_statistics(MODEL), preserving_proto_field_name=True)
        everything = http.get_inference_statistics()
        with pytest.raises(InferenceServerException) as info:
            grpc.get_inference_statistics("other")
        assert info.value.status() == "StatusCode.NOT_FOUND"
        http.close()
        grpc.close()
    stats = over_http["model_stats"][0]
    assert everything == over_http
    assert (stats["name"], stats["version"]) == (MODEL, "1")
    assert stats["inference_count"] == 9 and stats["execution_count"] == 4  # showers, batches (max_queue_delay 0: one per request)
    infer = stats["inference_stats"]
    assert infer["success"]["count"] == 4 and infer["fail"]["count"] == 1
    for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert infer[key]["count"] == 4 and isinstance(infer[key]["ns"], int) and infer[key]["ns"] > 0
    assert infer["success"]["ns"] >= infer["compute_infer"]["ns"]
    assert {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]} == {1: 1, 2: 1, 3: 2}
    assert stats["last_inference"] > 1.6e12  # ms since the epoch
    # gRPC and HTTP report the same numbers (protobuf JSON writes 64-bit integers as strings)
    assert int(over_grpc["model_stats"][0]["inference_count"]) == 9
    assert int(over_grpc["model_stats"][0]["inference_stats"]["success"]["ns"]) == infer["success"]["ns"]


def test_config_over_http_is_triton_json(running) -> None:  # type: ignore[no-untyped-def]
    client = httpclient.InferenceServerClient(f"127.0.0.1:{running.http_port}")
    config = client.get_model_config(MODEL)
    client.close()
    assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == [1] and config["output"][0]["dims"] == [120]
    assert config["version_policy"]["specific"]["versions"] == [1]
    assert config["instance_group"] == [{"name": f"{MODEL}_0", "kind": "KIND_CPU", "count": 1, "gpus": [], "secondary_devices": [],
                                         "profile": [], "passive": False, "host_policy": ""}]  # fmt: skip
    assert config["optimization"]["input_pinned_memory"] == {"enable": False}
    assert json_format.ParseDict(config, mc.ModelConfig()) == running.service.spec.config()


def test_metadata_agrees_with_config_and_lists_only_implemented_extensions(running) -> None:  # type: ignore[no-untyped-def]
    http = httpclient.InferenceServerClient(f"127.0.0.1:{running.http_port}")
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{running.grpc_port}")
    meta, config = http.get_model_metadata(MODEL), http.get_model_config(MODEL)
    for tensor in meta["inputs"] + meta["outputs"]:
        configured = next(t for t in config["input"] + config["output"] if t["name"] == tensor["name"])
        assert tensor["shape"] == [-1, *configured["dims"]]  # the batch dimension, then the config's dims
    assert http.get_server_metadata()["extensions"] == list(SERVER_EXTENSIONS)
    assert list(grpc.get_server_metadata().extensions) == list(SERVER_EXTENSIONS)
    assert set(SERVER_EXTENSIONS) == {"binary_tensor_data", "model_configuration", "parameters", "statistics"}
    http.close()
    grpc.close()


def test_unimplemented_calls_answer_cleanly_without_logging_errors(running, caplog) -> None:  # type: ignore[no-untyped-def]
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{running.grpc_port}")
    with pytest.raises(InferenceServerException) as info:
        client.get_log_settings()
    client.close()
    assert info.value.status() == "StatusCode.UNIMPLEMENTED"
    conn = httplib.HTTPConnection("127.0.0.1", running.http_port, timeout=10)
    conn.request("GET", "/v2/logging")
    response = conn.getresponse()
    assert response.status == 404 and "error" in json.loads(response.read())
    conn.close()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_shutdown_answers_every_request_already_received(gen) -> None:  # type: ignore[no-untyped-def]
    gate = threading.Event()
    slow = CountingGenerator()
    slow.gate = gate
    service = InferenceService(slow, name=MODEL, batching=BatchingConfig(max_batch_size=1, max_queue_delay_ms=0), limits=LIMITS)
    srv = serve_server.start(service, http_port=0, grpc_port=0, grpc_workers=2)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    outcomes: list[object] = []
    done = threading.Semaphore(0)

    def keep(result, error) -> None:  # type: ignore[no-untyped-def]
        outcomes.append(error.status() if error else result.as_numpy("SHOWERS").shape)
        done.release()

    for k in range(6):  # 2 reach handler threads, 4 wait in gRPC's pool for one
        inputs = [grpcclient.InferInput("INCIDENT_ENERGY", [1, 1], "FP32")]
        inputs[0].set_data_from_numpy(np.array([[5e3]], np.float32))
        client.async_infer(MODEL, inputs, keep, parameters={"seed": k})
    pool = srv._grpc._state.thread_pool  # type: ignore[attr-defined]
    while pool._work_queue.qsize() < 4 or service.batcher.stats.snapshot()["queue_depth"] < 1:
        gate.wait(0.01)
    stopper = threading.Thread(target=srv.stop)
    stopper.start()
    while service.ready:
        gate.wait(0.01)
    late = [grpcclient.InferInput("INCIDENT_ENERGY", [1, 1], "FP32")]
    late[0].set_data_from_numpy(np.array([[6e3]], np.float32))
    client.async_infer(MODEL, late, keep, parameters={"seed": 99})  # sent after shutdown began, while requests run
    for _ in range(3000):  # the server still takes calls while it drains: the late one joins the 4 waiting
        if pool._work_queue.qsize() == 5:
            break
        gate.wait(0.01)
    assert pool._work_queue.qsize() == 5
    gate.set()
    stopper.join(60)
    for _ in range(7):
        assert done.acquire(timeout=30)
    client.close()
    assert outcomes == [(1, 120)] * 7


# --- command line ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--http-port", "99999"], "--http-port must be a port number from 0 to 65535"),
        (["--http-port", "18765", "--grpc-port", "18765"], "different ports"),
        (["--energy-range", "1TeV:1GeV"], "energy range must satisfy"),
        (["--max-body-bytes", "0"], "must be >= 1"),
    ],
)
def test_serve_refuses_bad_settings_in_one_line(cli, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    status, err = cli("serve", "--engine", "gflash", "--geometry", "tiny", *args)
    assert status == 2 and message in one_error_line(err, "serve")


def test_submit_checks_energies_of_direct_callers(gen) -> None:  # type: ignore[no-untyped-def]
    with InferenceService(gen, name=MODEL, limits=LIMITS) as service:
        tensor = InputTensor("INCIDENT_ENERGY", "FP32", (1, 1), np.array([[2e5]], np.float32))
        with pytest.raises(InferenceError, match="outside the range"):
            service.submit(MODEL, "", [tensor], {})
        assert service.batcher.stats.snapshot()["requests"] == {"invalid": 1}
