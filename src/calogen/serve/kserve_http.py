"""The KServe v2 HTTP/REST front end (FastAPI), as Triton speaks it.

Endpoints: ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2`` (server metadata),
``/v2/models/{m}[/versions/{v}]`` (metadata), ``.../ready``, ``.../config``, ``.../stats``,
``GET /v2/models/stats``, ``POST .../infer``, ``POST /v2/repository/index``, plus ``GET /metrics``
(Prometheus text) and ``GET /stats`` (JSON). Protobuf answers (config, statistics) are JSON as Triton
writes it: field names as in the ``.proto``, 64-bit integers as numbers, primitive fields always present.

Infer bodies are JSON, or JSON followed by raw tensors when the ``Inference-Header-Content-Length``
header gives the JSON length (Triton's binary tensor extension: an input's ``binary_data_size``
parameter is its byte count; outputs come back binary when the output's ``binary_data`` parameter or
the request's ``binary_data_output`` parameter is true). Bodies may be gzip or deflate encoded. A body
is read and inflated in bounded pieces: past ``RequestLimits.max_body_bytes`` (as sent) or
``max_inflated_bytes`` (decoded) it is refused with 413 without being kept. Errors are
``{"error": message}`` with a 4xx/5xx status.

Reference: https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import zlib
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from starlette.exceptions import HTTPException as StarletteHTTPException

from calogen.serve.protocol import (
    NUMPY_TYPES,
    SERVER_EXTENSIONS,
    SHOWER_OUTPUT,
    InferenceError,
    InputTensor,
    ModelNotFound,
    PayloadTooLarge,
    decode_tensor,
)
from calogen.serve.service import InferenceService

__all__ = ["create_app", "proto_to_json"]

log = logging.getLogger(__name__)

HEADER_LENGTH = "Inference-Header-Content-Length"
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_NUMBER_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}
"""numpy kinds of JSON values accepted for each kind of datatype (a float input takes integers too)."""


def create_app(service: InferenceService, *, server_version: str = "0.1.0") -> FastAPI:
    """A FastAPI application serving ``service`` over the KServe v2 HTTP protocol."""
    app = FastAPI(title="calogen KServe v2", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(InferenceError)
    async def refused(request: Request, exc: InferenceError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.http_status)

    @app.exception_handler(StarletteHTTPException)
    async def not_served(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": f"{request.method} {request.url.path}: {exc.detail}"}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200 if service.ready else 503)

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "calogen", "version": server_version, "extensions": list(SERVER_EXTENSIONS)}

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

    def statistics() -> dict[str, object]:
        return {"model_stats": [proto_to_json(service.batcher.stats.model_statistics(service.spec.name, service.spec.version))]}

    @app.get("/v2/models/stats")
    async def all_statistics() -> dict[str, object]:
        return statistics()

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
            return proto_to_json(service.spec.config())

        @app.get(prefix + "/stats")
        async def model_statistics(model: str, version: str = "") -> dict[str, object]:
            service.spec.check(model, version)
            return statistics()

        @app.post(prefix + "/infer")
        async def infer(request: Request, model: str, version: str = "") -> Response:
            received = time.monotonic()
            try:
                raw = await _read_body(request, service.limits.max_body_bytes)
                service.spec.check(model, version)
                body = _inflate(raw, request.headers.get("content-encoding"), service.limits.max_inflated_bytes)
                header, inputs, outputs, binary_out = _parse_body(body, request.headers.get(HEADER_LENGTH))
            except InferenceError as exc:
                if not isinstance(exc, ModelNotFound) and model == service.spec.name:
                    service.record_refused(received)
                raise
            future, seed = service.submit(model, version, inputs, header.get("parameters") or {}, list(outputs), received=received)
            try:
                showers = await asyncio.wrap_future(future)
            except InferenceError:  # a refusal (timeout, shutdown) keeps its own status
                raise
            except Exception as exc:
                return JSONResponse({"error": f"generator failed: {exc}"}, status_code=500)
            return _response(service, header.get("id"), showers, seed, outputs.get(SHOWER_OUTPUT, binary_out))

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body as sent, at most ``limit`` bytes; raises :class:`PayloadTooLarge` beyond.

    A body declared larger is refused before reading; one that grows larger while arriving is
    refused at the limit. Either way the server (uvicorn) drops what the client still sends, so the
    client gets the 413 without the server keeping the body.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large("exceeds", limit, "--max-body-bytes")
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise _too_large("exceeds", limit, "--max-body-bytes")
        parts.append(part)
    return b"".join(parts)


def _inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """``body`` with its ``Content-Encoding`` (gzip or deflate) undone, never more than ``limit`` bytes."""
    if encoding in (None, "identity"):
        if len(body) > limit:
            raise _too_large("inflates beyond", limit, "--max-inflated-bytes")
        return body
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise InferenceError(f"unsupported Content-Encoding {encoding!r}; use gzip, deflate or none")
    parts, size, data = [], 0, body
    try:
        while data:  # one pass per gzip member
            inflater = zlib.decompressobj(wbits)
            while data and not inflater.eof:
                part = inflater.decompress(data, limit - size + 1)
                size += len(part)
                if size > limit:
                    raise _too_large("inflates beyond", limit, "--max-inflated-bytes")
                parts.append(part)
                data = inflater.unconsumed_tail
            if not inflater.eof:
                raise InferenceError(f"{encoding} request body is truncated")
            data = inflater.unused_data
    except zlib.error as exc:
        raise InferenceError(f"cannot decompress {encoding} request body: {exc}") from None
    return b"".join(parts)


def _too_large(what: str, limit: int, option: str) -> PayloadTooLarge:
    """The 413 refusal of a body that ``what`` (exceeds, inflates beyond) ``limit`` bytes, naming the server ``option`` that sets it."""
    return PayloadTooLarge(f"request body {what} the server's limit of {limit} bytes; send fewer showers per request or raise {option}")


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
    except RecursionError:
        raise InferenceError("request JSON is nested too deeply; inputs need at most a list of numbers per tensor") from None
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
        values = np.asarray(item["data"])
        if values.dtype.kind not in _NUMBER_KINDS[dtype.kind]:
            raise TypeError(f"found {values.dtype.kind!r}-kind values (JSON strings, booleans or nulls?)")
        raw = values.astype(dtype.newbyteorder("<")).tobytes()
    except (TypeError, ValueError, OverflowError) as exc:
        raise InferenceError(f"input {name!r}: 'data' must be a list of JSON numbers for {datatype}: {exc}") from None
    return decode_tensor(name, datatype, shape, raw), 0


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


def proto_to_json(message: Message) -> dict[str, Any]:
    """``message`` as Triton's HTTP JSON: proto field names, 64-bit integers as numbers, enums by name,
    primitive and repeated fields even when default, sub-messages when set."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if field.is_repeated and not is_map:
            out[field.name] = [_json_value(field, v) for v in value]
        elif is_map:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {str(k): _json_value(value_field, v) for k, v in value.items()}
        elif field.message_type is not None or field.containing_oneof is not None:
            if message.HasField(field.name):
                out[field.name] = _json_value(field, value)
        else:
            out[field.name] = _json_value(field, value)
    return out


def _json_value(field: FieldDescriptor, value: Any) -> Any:
    """One scalar or message value of ``field`` as JSON."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return proto_to_json(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        named = field.enum_type.values_by_number.get(value)
        return named.name if named is not None else value
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    return value
