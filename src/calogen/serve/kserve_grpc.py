"""The KServe v2 gRPC front end, on the service definition shipped with ``tritonclient``.

Implements ``ServerLive``, ``ServerReady``, ``ServerMetadata``, ``ModelReady``, ``ModelMetadata``,
``ModelConfig``, ``ModelStatistics``, ``RepositoryIndex`` and ``ModelInfer`` of
``inference.GRPCInferenceService``; the other methods answer ``UNIMPLEMENTED``. Tensors travel in
``raw_input_contents`` / ``raw_output_contents`` (as Triton clients send them) or in the typed
``contents`` fields. Refused requests end with the status code of their
:class:`~calogen.serve.protocol.InferenceError`; messages beyond ``RequestLimits.max_body_bytes`` are
refused by gRPC itself with ``RESOURCE_EXHAUSTED``.

Reference: https://github.com/triton-inference-server/common/blob/main/protobuf/grpc_service.proto
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from calogen.errors import CalogenError
from calogen.serve.protocol import NUMPY_TYPES, SERVER_EXTENSIONS, SHOWER_OUTPUT, InferenceError, InputTensor, decode_tensor
from calogen.serve.service import InferenceService

__all__ = ["KServeServicer", "create_server"]

_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
_NO_DEADLINE_S = 1e7  # gRPC reports a huge time_remaining for calls without a deadline


class KServeServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Answers the KServe v2 gRPC calls for one :class:`InferenceService`."""

    def __init__(self, service: InferenceService, *, server_version: str = "0.1.0") -> None:
        self.service = service
        self.server_version = server_version

    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=self.service.ready)

    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pb.ServerMetadataResponse(name="calogen", version=self.server_version, extensions=SERVER_EXTENSIONS)

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        spec = self.service.spec
        known = request.name == spec.name and request.version in ("", spec.version)
        return pb.ModelReadyResponse(ready=known and self.service.ready)

    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        meta = self._checked(context, request.name, request.version).metadata()
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta["outputs"]],
        )

    def ModelConfig(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pb.ModelConfigResponse(config=self._checked(context, request.name, request.version).config())

    def ModelStatistics(self, request: Any, context: grpc.ServicerContext) -> Any:
        spec = self.service.spec
        if request.name:
            self._checked(context, request.name, request.version)
        return pb.ModelStatisticsResponse(model_stats=[self.service.batcher.stats.model_statistics(spec.name, spec.version)])

    def RepositoryIndex(self, request: Any, context: grpc.ServicerContext) -> Any:
        spec = self.service.spec
        state = "READY" if self.service.ready else "UNAVAILABLE"
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(name=spec.name, version=spec.version, state=state)])

    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:
        received = time.monotonic()
        try:
            try:
                inputs = _inputs(request)
            except InferenceError:
                if request.model_name == self.service.spec.name:
                    self.service.record_refused(received)
                raise
            params = {key: _parameter(value) for key, value in request.parameters.items()}
            outputs = [o.name for o in request.outputs]
            remaining = _deadline_s(context)
            future, seed = self.service.submit(
                request.model_name, request.model_version, inputs, params, outputs, timeout_s=remaining, received=received
            )
            showers = future.result(timeout=remaining)
        except InferenceError as exc:
            context.abort(getattr(grpc.StatusCode, exc.grpc_code), str(exc))
        except concurrent.futures.TimeoutError:
            future.cancel()
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the request did not finish within its deadline")
        except Exception as exc:
            context.abort(grpc.StatusCode.INTERNAL, f"generator failed: {exc}")
        spec = self.service.spec
        response = pb.ModelInferResponse(model_name=spec.name, model_version=spec.version, id=request.id)
        response.outputs.add(name=SHOWER_OUTPUT, datatype="FP32", shape=list(showers.shape))
        response.raw_output_contents.append(showers.astype("<f4", copy=False).tobytes())
        response.parameters["seed"].int64_param = seed
        return response

    def _checked(self, context: grpc.ServicerContext, name: str, version: str):  # type: ignore[no-untyped-def]
        """The model spec, or the call aborted with NOT_FOUND."""
        try:
            self.service.spec.check(name, version)
        except InferenceError as exc:
            context.abort(getattr(grpc.StatusCode, exc.grpc_code), str(exc))
        return self.service.spec


def _unimplemented(name: str):  # type: ignore[no-untyped-def]
    """A servicer method that answers ``UNIMPLEMENTED`` (the generated one also logs a traceback)."""

    def method(self: KServeServicer, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"calogen serve does not implement {name}")

    return method


for _name in vars(service_pb2_grpc.GRPCInferenceServiceServicer):
    if not _name.startswith("_") and _name not in vars(KServeServicer):
        setattr(KServeServicer, _name, _unimplemented(_name))


def _inputs(request: Any) -> list[InputTensor]:
    """The decoded inputs of a ``ModelInferRequest`` (raw contents or typed contents)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InferenceError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; give one per input")
    tensors = []
    for i, item in enumerate(request.inputs):
        if raw:
            tensors.append(decode_tensor(item.name, item.datatype, item.shape, raw[i]))
            continue
        dtype, field = NUMPY_TYPES.get(item.datatype), _CONTENTS_FIELD.get(item.datatype)
        if dtype is None or field is None:
            tensors.append(InputTensor(item.name, item.datatype, tuple(item.shape), None))
            continue
        values = np.asarray(getattr(item.contents, field), dtype=dtype)
        tensors.append(decode_tensor(item.name, item.datatype, item.shape, values.astype(dtype.newbyteorder("<")).tobytes()))
    return tensors


def _deadline_s(context: grpc.ServicerContext) -> float | None:
    """Seconds left before the client's deadline, ``None`` when the call has none."""
    remaining = context.time_remaining()
    return None if remaining is None or remaining > _NO_DEADLINE_S else max(remaining, 0.0)


def _parameter(value: Any) -> object:
    """The Python value of an ``InferParameter``."""
    kind = value.WhichOneof("parameter_choice")
    return None if kind is None else getattr(value, kind)


def create_server(service: InferenceService, address: str, *, max_workers: int = 64) -> tuple[grpc.Server, int]:
    """A not yet started gRPC server for ``service`` bound to ``address`` (``host:port``, port 0 picks one); returns it and its port.

    Incoming messages are limited to ``service.limits.max_body_bytes`` (after decompression).
    """
    options = [
        ("grpc.max_receive_message_length", service.limits.max_body_bytes),
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.so_reuseport", 0),  # a port in use is an error, not shared with another server
    ]
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="calogen-grpc"), options=options)
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(KServeServicer(service), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        raise CalogenError(f"cannot bind gRPC to {address}; choose another --grpc-port")
    return server, port
