"""The KServe v2 / Triton view of a calogen Generator, shared by the HTTP and gRPC front ends.

A served model takes ``INCIDENT_ENERGY`` (FP32, ``[B, 1]``, MeV, within the served energy range) and an
optional ``SEED`` (INT64, ``[B, 1]`` all equal, or one element; the request parameter ``seed`` does the
same) and returns ``SHOWERS`` (FP32, ``[B, voxels]``, MeV). A trained model (not a hybrid refiner) also takes ``INCIDENT_DIRECTION``
(FP32, ``[B, 2]`` or ``[2]`` for every shower): ``(theta, phi)`` in radians, theta the polar angle to the layer
normal, ``0 <= theta < pi/2`` and ``|phi| <= 2 pi``; without it the model's default direction is used (the
config parameter ``default_direction_rad``). A model not conditioned on the direction accepts only that
default (within :data:`DIRECTION_TOLERANCE`). The transports only decode bytes into ``(name, datatype, shape, array)``
tensors; validation, the metadata and the model configuration live here, so both speak alike.

Reference: KServe open inference protocol v2, https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/
and Triton's model configuration, ``model_config.proto``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from calogen.errors import CalogenError

__all__ = [
    "DIRECTION_INPUT",
    "ENERGY_INPUT",
    "SEED_INPUT",
    "SERVER_EXTENSIONS",
    "SHOWER_OUTPUT",
    "InferenceError",
    "InputTensor",
    "ModelNotFound",
    "ModelSpec",
    "PayloadTooLarge",
    "RequestTimeout",
    "ServerBusy",
    "ServerUnavailable",
    "decode_tensor",
    "parse_inputs",
]

ENERGY_INPUT = "INCIDENT_ENERGY"
DIRECTION_INPUT = "INCIDENT_DIRECTION"
DIRECTION_TOLERANCE = 1e-6
"""Largest angle (rad, as the distance of the unit vectors) between a requested direction and the fixed training
direction of a model not conditioned on the direction for the two to count as equal (float32 rounding of the
request is ~1e-7; at normal incidence every phi is the same direction)."""
SEED_INPUT = "SEED"
SHOWER_OUTPUT = "SHOWERS"
SERVER_EXTENSIONS = ("binary_tensor_data", "model_configuration", "parameters", "statistics")
"""The KServe/Triton protocol extensions both front ends implement in full (``parameters``: the seed)."""

NUMPY_TYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
"""KServe datatype names of the fixed-size types and their little-endian numpy dtypes."""


class InferenceError(CalogenError):
    """A request the server refuses; ``http_status`` and ``grpc_code`` say how each transport reports it."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class ModelNotFound(InferenceError):
    """The request names a model or version this server does not serve."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class PayloadTooLarge(InferenceError):
    """The request body is larger than the server's limit (see :class:`~calogen.serve.limits.RequestLimits`)."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class ServerBusy(InferenceError):
    """The request queue is full; the client should retry later or slow down."""

    http_status = 503
    grpc_code = "RESOURCE_EXHAUSTED"


class ServerUnavailable(InferenceError):
    """The server is shutting down and takes no new requests."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class RequestTimeout(InferenceError):
    """The request waited longer than its timeout before it could be run."""

    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"


@dataclass(frozen=True)
class InputTensor:
    """One decoded input: its name, KServe datatype, shape and values (``None`` when the datatype is unknown)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | None


@dataclass(frozen=True)
class ModelSpec:
    """What a served Generator looks like from the outside.

    Args:
        name: model name in URLs and requests.
        n_voxels: voxels per shower (the width of ``SHOWERS``).
        max_batch_size: the most showers one request may ask for.
        energy_range: smallest and largest incident energy served, MeV.
        version: the one version served.
        parameters: free-form facts shown in the config (geometry, engine, NFE of a few-step sampler).
        max_queue_delay_us: the dynamic batcher's wait for more requests, for the config.
        preferred_batch_size: the batch the dynamic batcher aims at, for the config.
        direction: ``(theta, phi)`` rad a trained model generates at when a request carries no
            ``INCIDENT_DIRECTION``; None: the generator takes no direction (a simulation engine).
        direction_conditioned: the model takes any direction, else only ``direction``.
    """

    name: str
    n_voxels: int
    max_batch_size: int
    energy_range: tuple[float, float] = (0.0, float("inf"))
    version: str = "1"
    parameters: Mapping[str, str] = field(default_factory=dict)
    max_queue_delay_us: int = 0
    preferred_batch_size: int = 0
    direction: tuple[float, float] | None = None
    direction_conditioned: bool = False

    def __post_init__(self) -> None:
        if self.direction_conditioned and self.direction is None:
            raise CalogenError(f"model {self.name!r} is conditioned on the incident direction but has no default direction")

    def check(self, name: str, version: str = "") -> None:
        """Raise :class:`ModelNotFound` unless ``name`` (and ``version`` when given) is this model."""
        if name != self.name:
            raise ModelNotFound(f"unknown model {name!r}; this server serves {self.name!r}")
        if version and version != self.version:
            raise ModelNotFound(f"unknown version {version!r} of model {name!r}; the served version is {self.version!r}")

    def metadata(self) -> dict[str, object]:
        """The KServe v2 model metadata (same fields over HTTP JSON and gRPC); a direction-conditioned model
        lists ``INCIDENT_DIRECTION`` too."""
        directions = [{"name": DIRECTION_INPUT, "datatype": "FP32", "shape": [-1, 2]}] if self.direction_conditioned else []
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "calogen",
            "inputs": [
                {"name": ENERGY_INPUT, "datatype": "FP32", "shape": [-1, 1]},
                {"name": SEED_INPUT, "datatype": "INT64", "shape": [-1, 1]},
                *directions,
            ],
            "outputs": [{"name": SHOWER_OUTPUT, "datatype": "FP32", "shape": [-1, self.n_voxels]}],
        }

    def config(self):  # type: ignore[no-untyped-def]
        """The Triton ``ModelConfig`` protobuf describing this model (inputs without the batch dimension).

        One CPU instance (the batcher's worker), no pinned memory; the served energy range is the
        parameter ``energy_range_mev`` (``min:max``), the default direction ``default_direction_rad``
        (``theta:phi``, for a trained model), and a direction-conditioned model has the optional input
        ``INCIDENT_DIRECTION``.
        """
        from tritonclient.grpc import model_config_pb2 as mc

        config = mc.ModelConfig(name=self.name, platform="calogen", backend="calogen", max_batch_size=self.max_batch_size)
        config.input.add(name=ENERGY_INPUT, data_type=mc.TYPE_FP32, dims=[1])
        config.input.add(name=SEED_INPUT, data_type=mc.TYPE_INT64, dims=[1], optional=True)
        if self.direction_conditioned:
            config.input.add(name=DIRECTION_INPUT, data_type=mc.TYPE_FP32, dims=[2], optional=True)
        config.output.add(name=SHOWER_OUTPUT, data_type=mc.TYPE_FP32, dims=[self.n_voxels])
        config.dynamic_batching.max_queue_delay_microseconds = self.max_queue_delay_us
        if self.preferred_batch_size:
            config.dynamic_batching.preferred_batch_size.append(self.preferred_batch_size)
        config.version_policy.specific.versions.append(int(self.version))
        config.instance_group.add(name=f"{self.name}_0", kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
        config.optimization.input_pinned_memory.enable = False
        config.optimization.output_pinned_memory.enable = False
        facts = {**self.parameters, "energy_range_mev": "{:g}:{:g}".format(*self.energy_range)}
        if self.direction is not None:
            facts["default_direction_rad"] = "{!r}:{!r}".format(*self.direction)
        for key, value in facts.items():
            config.parameters[key].string_value = str(value)
        return config


def decode_tensor(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> InputTensor:
    """An :class:`InputTensor` from little-endian raw bytes, checking the byte count against the shape."""
    shape = tuple(int(s) for s in shape)
    dtype = NUMPY_TYPES.get(datatype)
    if dtype is None:
        return InputTensor(name, datatype, shape, None)
    if any(s < 0 for s in shape):
        raise InferenceError(f"input {name!r} has a negative dimension in shape {list(shape)}")
    expected = math.prod(shape) * dtype.itemsize  # exact: a huge shape cannot wrap around to match
    if len(raw) != expected:
        raise InferenceError(f"input {name!r}: {len(raw)} bytes do not match shape {list(shape)} of {datatype} ({expected} bytes)")
    return InputTensor(name, datatype, shape, np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape))


def parse_inputs(
    spec: ModelSpec, inputs: Sequence[InputTensor], parameters: Mapping[str, object], outputs: Sequence[str] = ()
) -> tuple[np.ndarray, int | None, np.ndarray | None]:
    """Validate a request's tensors and return ``(energies (B,) float32 MeV, seed or None, directions)``.

    ``directions``: ``(B, 2)`` float64 ``(theta, phi)`` rad for a direction-conditioned model (the request's
    ``INCIDENT_DIRECTION``, else ``spec.direction`` for every shower); None for any other model.

    Args:
        spec: the model the request is for.
        inputs: the decoded input tensors.
        parameters: the request's parameters (``seed`` may be one).
        outputs: names of the requested outputs (empty means all).
    """
    by_name: dict[str, InputTensor] = {}
    optional = (SEED_INPUT, *((DIRECTION_INPUT,) if spec.direction is not None else ()))
    for tensor in inputs:
        if tensor.name not in (ENERGY_INPUT, *optional):
            raise InferenceError(
                f"unexpected input {tensor.name!r}; model {spec.name!r} takes {ENERGY_INPUT!r} and optionally {' and '.join(map(repr, optional))}"
            )
        if tensor.name in by_name:
            raise InferenceError(f"input {tensor.name!r} given twice")
        by_name[tensor.name] = tensor
    for name in outputs:
        if name != SHOWER_OUTPUT:
            raise InferenceError(f"unknown output {name!r}; model {spec.name!r} returns {SHOWER_OUTPUT!r}")
    if ENERGY_INPUT not in by_name:
        raise InferenceError(f"missing input {ENERGY_INPUT!r} (FP32, shape [batch, 1], MeV)")
    energies = _energies(spec, by_name[ENERGY_INPUT])
    seed = _seed(by_name.get(SEED_INPUT), parameters.get("seed"), energies.size)
    return energies, seed, _directions(spec, by_name.get(DIRECTION_INPUT), energies.size)


def _energies(spec: ModelSpec, tensor: InputTensor) -> np.ndarray:
    """The incident energies of a request, validated."""
    if tensor.datatype != "FP32":
        raise InferenceError(f"input {ENERGY_INPUT!r} must be FP32, got {tensor.datatype}")
    if len(tensor.shape) != 2 or tensor.shape[1] != 1 or tensor.shape[0] < 1:
        raise InferenceError(f"input {ENERGY_INPUT!r} must have shape [batch, 1] with batch >= 1, got {list(tensor.shape)}")
    if tensor.shape[0] > spec.max_batch_size:
        raise InferenceError(
            f"batch of {tensor.shape[0]} showers exceeds max_batch_size {spec.max_batch_size} of model {spec.name!r}; split the request"
        )
    energies = np.array(tensor.data, dtype=np.float32).reshape(-1)  # a writable copy of the request buffer
    if not np.all(np.isfinite(energies)) or np.any(energies <= 0):
        raise InferenceError(f"input {ENERGY_INPUT!r} must hold finite positive energies in MeV")
    low, high = spec.energy_range
    outside = (energies < low) | (energies > high)
    if outside.any():
        raise InferenceError(
            f"input {ENERGY_INPUT!r}: {float(energies[outside][0]):g} MeV is outside the range [{low:g}, {high:g}] MeV "
            f"served for model {spec.name!r} (see its config parameter 'energy_range_mev'; the server's --energy-range sets it)"
        )
    return energies


def _directions(spec: ModelSpec, tensor: InputTensor | None, batch: int) -> np.ndarray | None:
    """The directions of a request to a model with a ``spec.direction`` (see :func:`parse_inputs`), checked by
    :func:`calogen.models.preprocess.check_directions`; a model not conditioned on the direction refuses any but its own."""
    conditioned = spec.direction_conditioned
    if tensor is None or spec.direction is None:
        return np.tile(np.asarray(spec.direction, dtype=np.float64), (batch, 1)) if conditioned else None
    if tensor.datatype != "FP32":
        raise InferenceError(f"input {DIRECTION_INPUT!r} must be FP32 (theta, phi in radians), got {tensor.datatype}")
    from calogen.models.preprocess import check_directions, same_direction

    try:
        directions = check_directions(tensor.data, batch)  # type: ignore[arg-type]  # FP32: decoded
    except CalogenError as exc:
        raise InferenceError(f"input {DIRECTION_INPUT!r}: {exc}") from None
    if conditioned:
        return directions
    theta, phi = spec.direction
    if not same_direction(directions, (theta, phi), DIRECTION_TOLERANCE):
        raise InferenceError(
            f"model {spec.name!r} is not conditioned on the incident direction and generates only at its training direction "
            f"(theta, phi) = ({theta:.6g}, {phi:.6g}) rad; send that or leave out {DIRECTION_INPUT!r}"
        )
    return None


def _seed(tensor: InputTensor | None, parameter: object, batch: int) -> int | None:
    """The request's seed from the ``SEED`` input or the ``seed`` parameter; ``None`` when neither is given.

    ``SEED`` holds one value, or one per shower (``[batch, 1]``, as batching clients such as SONIC
    send it) that must then all be equal.
    """
    if tensor is not None and parameter is not None:
        raise InferenceError(f"give the seed either as input {SEED_INPUT!r} or as parameter 'seed', not both")
    if tensor is not None:
        if tensor.datatype != "INT64":
            raise InferenceError(f"input {SEED_INPUT!r} must be INT64, got {tensor.datatype}")
        if tensor.data is None or tensor.data.size not in (1, batch) or np.any(tensor.data != tensor.data.reshape(-1)[0]):
            raise InferenceError(f"input {SEED_INPUT!r} must hold one value, or the same value for each of the {batch} showers; got shape {list(tensor.shape)}")
        value = int(tensor.data.reshape(-1)[0])
    elif parameter is not None:
        if isinstance(parameter, bool) or not isinstance(parameter, int):
            raise InferenceError(f"parameter 'seed' must be an integer, got {parameter!r}")
        value = parameter
    else:
        return None
    if not 0 <= value < 2**63:  # seeds are hashed into 63-bit child seeds; larger ones would wrap
        raise InferenceError(f"seed must be an integer in [0, 2**63), got {value}")
    return value
