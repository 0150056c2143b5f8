"""The KServe v2 HTTP/REST front end (FastAPI), as Triton speaks it.

Endpoints: ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2`` (server metadata),
``/v2/models/{m}[/versions/{v}]`` (metadata), ``.../ready``, ``.../config``, ``POST .../infer``,
``POST /v2/repository/index``, plus ``GET /metrics`` (Prometheus text) and ``GET /stats`` (JSON).

Infer bodies are JSON, or JSON followed by raw tensors when the ``Inference-Header-Content-Length``
header gives the JSON length (Triton's binary tensor extension: an input's ``binary_data_size``
parameter is its byte count; outputs come back binary when the output's ``binary_data`` parameter or
the request's ``binary_data_output`` parameter is true). Bodies may be gzip or deflate encoded.
Errors are ``{"error": message}`` with a 4xx/5xx status.

Reference: https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md
"""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from google.protobuf import json_format

from calogen.serve.protocol import NUMPY_TYPES, SHOWER_OUTPUT, InferenceError, InputTensor, decode_tensor
from calogen.serve.service import InferenceService

__all__ = ["create_app"]

HEADER_LENGTH = "Inference-Header-Content-Length"
SERVER_EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository"]


def create_app(service: InferenceService, *, server_version: str = "0.1.0") -> FastAPI:
    """A FastAPI application serving ``service`` over the KServe v2 HTTP protocol."""
    app = FastAPI(title="calogen KServe v2", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(InferenceError)
    async def refused(request: Request, exc: InferenceError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.http_status)

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200 if service.ready else 503)

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "calogen", "version": server_version, "extensions": SERVER_EXTENSIONS}

    @app.post("/v2/repository/index")
    async def repository_index() -> list[dict[str, str]]:
        state = "READY" if service.ready else "UNAVAILABLE"
        return [{"name": service.spec.name, "version": service.spec.version, "state": state}]

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(service.batcher.stats.prometheus(service.spec.name), media_type="text/plain; version=0.0.4")

    @app.get("/stats")
    async def stats() -> dict[str, object]:
        return service.batcher.stats.snapshot()

    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):

        @app.get(prefix)
        async def model_metadata(model: str, version: str = "") -> dict[str, object]:
            service.spec.check(model, version)
            return service.spec.metadata()

        @app.get(prefix + "/ready")
        async def model_ready(model: str, version: str = "") -> Response:
            service.spec.check(model, version)
            return Response(status_code=200 if service.ready else 503)

        @app.get(prefix + "/config")
        async def model_config(model: str, version: str = "") -> dict[str, object]:
            service.spec.check(model, version)
            return json_format.MessageToDict(service.spec.config(), preserving_proto_field_name=True)

        @app.post(prefix + "/infer")
        async def infer(request: Request, model: str, version: str = "") -> Response:
            body = _decompress(await request.body(), request.headers.get("content-encoding"))
            header, inputs, outputs, binary_out = _parse_body(body, request.headers.get(HEADER_LENGTH))
            future, seed = service.submit(model, version, inputs, header.get("parameters") or {}, list(outputs))
            try:
                showers = await asyncio.wrap_future(future)
            except InferenceError:  # a refusal (timeout, shutdown) keeps its own status
                raise
            except Exception as exc:
                return JSONResponse({"error": f"generator failed: {exc}"}, status_code=500)
            return _response(service, header.get("id"), showers, seed, outputs.get(SHOWER_OUTPUT, binary_out))

    return app


def _decompress(body: bytes, encoding: str | None) -> bytes:
    """The request body with its ``Content-Encoding`` (gzip or deflate) undone."""
    try:
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except (OSError, zlib.error) as exc:
        raise InferenceError(f"cannot decompress {encoding} request body: {exc}") from None
    if encoding not in (None, "identity"):
        raise InferenceError(f"unsupported Content-Encoding {encoding!r}; use gzip, deflate or none")
    return body


def _parse_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], list[InputTensor], dict[str, bool], bool]:
    """The JSON header, the decoded inputs, the requested outputs (name -> binary) and the default binary flag."""
    try:
        size = len(body) if header_length is None else int(header_length)
    except ValueError:
        raise InferenceError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
    if not 0 <= size <= len(body):
        raise InferenceError(f"{HEADER_LENGTH} {size} is outside the body of {len(body)} bytes")
    try:
        header = json.loads(body[:size])
    except ValueError as exc:
        raise InferenceError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InferenceError("request JSON must be an object with an 'inputs' list")
    binary = memoryview(body)[size:]
    inputs, offset = [], 0
    for item in header["inputs"]:
        tensor, used = _input(item, binary[offset:])
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise InferenceError(f"binary inputs declare {offset} bytes but the body carries {len(binary)}")
    params = header.get("parameters") or {}
    if not isinstance(params, dict):
        raise InferenceError(f"request 'parameters' must be an object, got {params!r}")
    binary_out = bool(params.get("binary_data_output", False))
    outputs = header.get("outputs", [])
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
        raise InferenceError("request 'outputs' must be a list of objects with a 'name'")
    requested = {o["name"]: bool((o.get("parameters") or {}).get("binary_data", binary_out)) for o in outputs}
    return header, inputs, requested, binary_out


def _input(item: Any, binary: memoryview) -> tuple[InputTensor, int]:
    """One input from its JSON description (and the binary tail when it has ``binary_data_size``)."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise InferenceError("every input must be an object with 'name', 'datatype', 'shape' and 'data'")
    name, datatype, shape = item["name"], str(item.get("datatype", "")), item.get("shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise InferenceError(f"input {name!r} needs an integer list 'shape', got {shape!r}")
    nbytes = (item.get("parameters") or {}).get("binary_data_size")
    if nbytes is not None:
        if not isinstance(nbytes, int) or not 0 <= nbytes <= len(binary):
            raise InferenceError(f"input {name!r}: binary_data_size {nbytes!r} exceeds the {len(binary)} binary bytes left")
        return decode_tensor(name, datatype, shape, bytes(binary[:nbytes])), nbytes
    dtype = NUMPY_TYPES.get(datatype)
    if dtype is None:
        return InputTensor(name, datatype, tuple(shape), None), 0
    if "data" not in item:
        raise InferenceError(f"input {name!r} has neither 'data' nor a 'binary_data_size' parameter")
    try:
        data = np.asarray(item.get("data"), dtype=dtype).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InferenceError(f"input {name!r}: 'data' is not a list of {datatype} values: {exc}") from None
    return decode_tensor(name, datatype, shape, data.astype(dtype.newbyteorder("<")).tobytes()), 0


def _response(service: InferenceService, request_id: object, showers: np.ndarray, seed: int, binary: bool) -> Response:
    """The infer response: JSON, or JSON followed by the raw FP32 bytes when ``binary``."""
    output: dict[str, Any] = {"name": SHOWER_OUTPUT, "datatype": "FP32", "shape": list(showers.shape)}
    result: dict[str, Any] = {
        "model_name": service.spec.name,
        "model_version": service.spec.version,
        "parameters": {"seed": seed},
        "outputs": [output],
    }
    if request_id is not None:
        result["id"] = request_id
    if not binary:
        output["data"] = showers.reshape(-1).tolist()
        return JSONResponse(result)
    raw = showers.astype("<f4", copy=False).tobytes()
    output["parameters"] = {"binary_data_size": len(raw)}
    head = json.dumps(result).encode()
    return Response(head + raw, media_type="application/octet-stream", headers={HEADER_LENGTH: str(len(head))})
