"""Write and check a Triton model repository holding an exported generator.

Layout (https://github.com/triton-inference-server/server/blob/main/docs/user_guide/model_repository.md)::

    OUT/<name>/config.pbtxt        platform onnxruntime_onnx, max_batch_size, dynamic batching, instances
    OUT/<name>/1/model.onnx        the graph of calogen.serve.export

The configuration is built as Triton's own ``ModelConfig`` protobuf (``tritonclient.grpc.model_config_pb2``)
and written in protobuf text format, so Triton parses exactly what we checked. Dimensions exclude the
batch dimension, which Triton adds when ``max_batch_size > 0``.

The model folder is assembled in a hidden temporary folder inside ``OUT``, checked (graph against
PyTorch, configuration against graph) and renamed to ``OUT/<name>`` only when complete. An existing
``OUT/<name>`` is replaced only if it holds exactly what this function writes; the name must be a
plain folder name, so nothing is ever written outside ``OUT``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calogen.errors import CalogenError
from calogen.outputs import check_output_dir
from calogen.serve.export import OnnxCheck, default_direction, export_onnx, noise_input_name, takes_directions
from calogen.serve.protocol import DIRECTION_INPUT, ENERGY_INPUT, SHOWER_OUTPUT

__all__ = ["RepositoryError", "TritonSettings", "check_model_name", "check_repository", "model_config", "write_repository"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_OWN_FILES = {"config.pbtxt", "1", "1/model.onnx"}


class RepositoryError(CalogenError):
    """A Triton repository or its configuration is invalid or disagrees with its ONNX graph."""


@dataclass(frozen=True)
class TritonSettings:
    """Serving settings written into ``config.pbtxt``.

    Args:
        max_batch_size: the most showers in one request or batch.
        preferred_batch_size: the batch the dynamic batcher aims for (0: none).
        max_queue_delay_us: how long a request may wait for others to join its batch.
        instances: model instances (parallel copies).
        kind: ``cpu`` or ``gpu``.
    """

    max_batch_size: int = 256
    preferred_batch_size: int = 64
    max_queue_delay_us: int = 2000
    instances: int = 1
    kind: str = "cpu"

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.instances < 1 or self.max_queue_delay_us < 0:
            raise RepositoryError(f"max_batch_size and instances must be >= 1 and max_queue_delay_us >= 0, got {self}")
        if not 0 <= self.preferred_batch_size <= self.max_batch_size:
            raise RepositoryError(f"preferred_batch_size {self.preferred_batch_size} must lie in [0, max_batch_size={self.max_batch_size}]")
        if self.kind not in ("cpu", "gpu"):
            raise RepositoryError(f"instance kind must be 'cpu' or 'gpu', got {self.kind!r}")


def check_model_name(name: str) -> str:
    """``name`` if it is a plain model folder name (letters, digits, ``_ . -``, first a letter or digit,
    at most 128 characters); raise :class:`RepositoryError` otherwise (``../x``, ``a/b``, ``.hidden``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RepositoryError(
            f"model name {name!r} is not a plain folder name; use letters, digits, '_', '.' and '-' "
            "(starting with a letter or digit, at most 128 characters), e.g. --name calogen-ds2"
        )
    return name


def model_config(  # type: ignore[no-untyped-def]
    name: str, noise_shapes: Mapping[str, tuple[int, ...]], n_voxels: int, settings: TritonSettings, parameters: Mapping[str, str] | None = None,
    inputs: Mapping[str, tuple[int, ...]] | None = None, direction: tuple[float, float] | None = None,
):  # fmt: skip
    """The Triton ``ModelConfig`` of an exported generator named ``name``; ``inputs``: per-shower shapes of
    further FP32 inputs (a refiner's ``FASTSIM_SHOWER``); ``direction``: the default ``(theta, phi)`` rad of a
    direction-conditioned graph, which then takes ``INCIDENT_DIRECTION`` ``[2]`` (the parameter
    ``default_direction_rad``, ``theta:phi``, tells clients what to send for the model's default)."""
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig(name=name, platform="onnxruntime_onnx", backend="onnxruntime", max_batch_size=settings.max_batch_size)
    config.input.add(name=ENERGY_INPUT, data_type=mc.TYPE_FP32, dims=[1])
    for key, shape in (inputs or {}).items():
        config.input.add(name=key, data_type=mc.TYPE_FP32, dims=list(shape))
    for key, shape in noise_shapes.items():
        config.input.add(name=noise_input_name(key), data_type=mc.TYPE_FP32, dims=list(shape))
    if direction is not None:
        config.input.add(name=DIRECTION_INPUT, data_type=mc.TYPE_FP32, dims=[2])
        config.parameters["default_direction_rad"].string_value = "{!r}:{!r}".format(*direction)
    config.output.add(name=SHOWER_OUTPUT, data_type=mc.TYPE_FP32, dims=[n_voxels])
    config.dynamic_batching.max_queue_delay_microseconds = settings.max_queue_delay_us
    if settings.preferred_batch_size:
        config.dynamic_batching.preferred_batch_size.append(settings.preferred_batch_size)
    kind = mc.ModelInstanceGroup.KIND_GPU if settings.kind == "gpu" else mc.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(count=settings.instances, kind=kind)
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = str(value)
    return config


def write_repository(
    module,  # type: ignore[no-untyped-def]
    noise_shapes: Mapping[str, tuple[int, ...]],
    n_voxels: int,
    out: str | os.PathLike[str],
    *,
    name: str,
    settings: TritonSettings | None = None,
    parameters: Mapping[str, str] | None = None,
    check_energies: np.ndarray | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
) -> tuple[Path, OnnxCheck | None]:
    """Export ``module`` to ``OUT/<name>/1/model.onnx`` and write ``OUT/<name>/config.pbtxt``, checked first.

    Args:
        module: the export module ``(energies (B, 1), *noise) -> (B, n_voxels)``; a direction-conditioned
            model's also takes ``INCIDENT_DIRECTION`` (:func:`~calogen.serve.export.takes_directions`).
        noise_shapes: per-shower noise shapes, in ``forward`` order.
        n_voxels: voxels per shower.
        out: the repository root (created if missing).
        name: the model's name in the repository (:func:`check_model_name`).
        settings: batching and instance settings.
        parameters: free-form facts stored in the config (geometry, sampler, NFE).
        check_energies: energies (MeV) of the showers on which the graph is compared with PyTorch
            (:func:`~calogen.serve.export.export_onnx`; None: no comparison).
        inputs: further graph inputs and their check values (a refiner's FastSim showers), as in
            :func:`~calogen.serve.export.export_onnx`.

    Returns:
        The model folder and the comparison (None without ``check_energies``).

    Raises:
        RepositoryError: a bad name, or ``OUT/<name>`` exists and holds something else.
        ExportError: the graph differs from PyTorch; nothing is written.
    """
    from google.protobuf import text_format

    name = check_model_name(name)
    root = check_output_dir(out)
    folder = root / name
    if folder.is_symlink() or (folder.exists() and _contents(folder) != _OWN_FILES):
        raise RepositoryError(f"{folder} exists and is not a model folder written by calogen export; remove it or choose another --name")
    shapes = {key: tuple(np.shape(values)[1:]) for key, values in (inputs or {}).items()}
    direction = default_direction(module) if takes_directions(module) else None
    config = model_config(name, noise_shapes, n_voxels, settings or TritonSettings(), parameters, inputs=shapes, direction=direction)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.", suffix=".partial"))
    try:
        (tmp / "1").mkdir()
        check = export_onnx(module, noise_shapes, tmp / "1" / "model.onnx", check_energies=check_energies, inputs=inputs)
        (tmp / "config.pbtxt").write_text(text_format.MessageToString(config))
        check_repository(tmp, name=name)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700; give the usual permissions of a new folder
        if folder.exists():
            old = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.", suffix=".old"))
            os.replace(folder, old / name)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder, check


def _contents(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_repository(folder: str | os.PathLike[str], *, name: str | None = None):  # type: ignore[no-untyped-def]
    """Parse ``folder/config.pbtxt`` with Triton's schema and check it against ``folder/1/model.onnx``.

    The configured name must be ``name`` (default: the folder's name, as Triton requires); names,
    element types and per-shower shapes of every input and output must agree, and the graph's first
    dimension must be dynamic when ``max_batch_size > 0``. Returns the parsed ``ModelConfig``.
    """
    import onnx
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    folder = Path(folder)
    try:
        config = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())
    except text_format.ParseError as exc:
        raise RepositoryError(f"{folder}/config.pbtxt does not parse as a Triton ModelConfig: {exc}") from None
    expected = Path(folder).name if name is None else name
    if config.name and config.name != expected:
        raise RepositoryError(f"{folder}/config.pbtxt names the model {config.name!r}, but Triton serves it as {expected!r} (its folder name)")
    graph = onnx.load(str(folder / "1" / "model.onnx"), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    onnx_io = {"input": [v for v in graph.input if v.name not in initializers], "output": list(graph.output)}
    onnx_to_triton = {onnx.TensorProto.FLOAT: mc.TYPE_FP32, onnx.TensorProto.INT64: mc.TYPE_INT64}
    for kind, values in onnx_io.items():
        declared = {t.name: t for t in getattr(config, kind)}
        if set(declared) != {v.name for v in values}:
            raise RepositoryError(f"config {kind}s {sorted(declared)} differ from the ONNX graph's {sorted(v.name for v in values)}")
        for value in values:
            tensor = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
            if config.max_batch_size > 0:
                if not dims or dims[0] != -1:
                    raise RepositoryError(f"ONNX {kind} {value.name!r} has no dynamic batch dimension (shape {dims})")
                dims = dims[1:]
            if dims != list(declared[value.name].dims) or onnx_to_triton.get(tensor.elem_type) != declared[value.name].data_type:
                raise RepositoryError(
                    f"{kind} {value.name!r}: config says {mc.DataType.Name(declared[value.name].data_type)} {list(declared[value.name].dims)}, "
                    f"the ONNX graph has element type {tensor.elem_type} and shape {dims}"
                )
    return config
