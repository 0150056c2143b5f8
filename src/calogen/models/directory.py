"""Reading and checking the files of a model directory, before anything is allocated or run.

``config.json`` must be a JSON object with the format and version this calogen writes, a ``geometry``
and a ``model`` object and an integer ``layer_dim``; every model setting is type-checked by
:class:`~calogen.models.config.ModelConfig`. Weights must be finite and the preprocessing must fit
the geometry and the networks. Every problem raises :class:`ModelError` naming the file and the fix.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from calogen.cell_geometry import FORMAT as CELL_FORMAT
from calogen.cell_geometry import CellGeometry
from calogen.errors import CalogenError
from calogen.geometry import Geometry, Layer
from calogen.models.config import ModelConfig
from calogen.models.preprocess import Preprocessor
from calogen.models.voxel_groups import energy_groups, model_layers, radial_slots

__all__ = [
    "FORMAT", "VERSION", "ModelError", "check_preprocessing", "check_weights", "geometry_from_dict", "geometry_to_dict",
    "model_config_from_dict", "read_config",
]  # fmt: skip

FORMAT = "calogen-model"
VERSION = 1


class ModelError(CalogenError):
    """A model directory is missing, incomplete, damaged or incompatible."""


def geometry_to_dict(geometry: Geometry | CellGeometry) -> dict[str, Any]:
    """JSON form of a geometry (every field, so it round-trips exactly); a cell geometry's is its own JSON
    (:meth:`~calogen.cell_geometry.CellGeometry.to_dict`)."""
    if isinstance(geometry, CellGeometry):
        return geometry.to_dict()
    return {
        "name": geometry.name, "particle": geometry.particle, "pid": geometry.pid, "threshold": geometry.threshold,
        "layers": [{"r_edges": list(x.r_edges), "n_alpha": x.n_alpha, "z_range": list(x.z_range)} for x in geometry.layers],
    }  # fmt: skip


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    return value


def _cell_geometry_from_dict(data: dict[str, Any], max_voxels: int | None) -> CellGeometry:
    """The cell geometry of ``config.json``, at most ``max_voxels`` voxels (counted before it is built)."""
    layers = data.get("layers")
    cells = sum(len(x["x"]) for x in layers if isinstance(x, dict) and isinstance(x.get("x"), list)) if isinstance(layers, list) else 0
    if max_voxels is not None and cells > max_voxels:
        raise ModelError(f"the cell geometry in config.json has {cells:,} voxels, more than the limit of {max_voxels:,}")
    try:
        return CellGeometry.from_dict(data, source="the cell geometry in config.json")
    except (CalogenError, TypeError) as exc:
        raise ModelError(f"{exc}; the model directory is damaged") from None


def geometry_from_dict(data: dict[str, Any], *, max_voxels: int | None = None) -> Geometry | CellGeometry:
    """Inverse of :func:`geometry_to_dict`, with strict types; at most ``max_voxels`` voxels (None: no limit).

    Raises:
        ModelError: a field is missing or of the wrong type, or the geometry is invalid or too large.
    """
    if isinstance(data, dict) and data.get("format") == CELL_FORMAT:
        return _cell_geometry_from_dict(data, max_voxels)
    try:
        if not isinstance(data, dict) or not isinstance(data["layers"], list) or not isinstance(data["name"], str):
            raise TypeError("it must be an object with a name and a list of layers")
        layers = []
        for i, x in enumerate(data["layers"]):
            if not isinstance(x, dict) or not isinstance(x["r_edges"], list) or not isinstance(x["z_range"], list):
                raise TypeError(f"layer {i} must be an object with lists r_edges and z_range")
            n_alpha = _integer(x["n_alpha"], f"layer {i} n_alpha")
            edges = tuple(_number(r, f"layer {i} r_edges") for r in x["r_edges"])
            if max_voxels is not None and n_alpha * max(len(edges) - 1, 0) > max_voxels:
                raise ValueError(f"layer {i} has more than {max_voxels:,} voxels")
            layers.append(Layer(edges, n_alpha, tuple(_number(z, f"layer {i} z_range") for z in x["z_range"])))  # type: ignore[arg-type]
        particle = data["particle"]
        if not isinstance(particle, str):
            raise TypeError(f"particle must be a string, got {particle!r}")
        geometry = Geometry(data["name"], particle, _integer(data["pid"], "pid"), tuple(layers), _number(data["threshold"], "threshold"))
    except KeyError as exc:
        raise ModelError(f"the geometry in config.json lacks {exc}; the model directory is damaged") from None
    except (TypeError, ValueError) as exc:  # CalogenError is a ValueError: the geometry's own checks
        raise ModelError(f"the geometry in config.json is invalid ({exc}); the model directory is damaged") from None
    if max_voxels is not None and geometry.n_voxels > max_voxels:
        raise ModelError(f"the geometry in config.json has {geometry.n_voxels:,} voxels, more than the limit of {max_voxels:,}")
    return geometry


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """A :class:`ModelConfig` from its JSON form (lists become tuples; types checked strictly)."""
    if not isinstance(data, dict):
        raise ModelError(f"the model settings in config.json must be an object, got {data!r}")
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ModelError(f"model settings {unknown} are unknown to this calogen; the model was written by a newer version")
    try:
        return ModelConfig(**data)
    except CalogenError as exc:
        raise ModelError(f"config.json: {exc}") from None


def read_config(directory: Path) -> dict[str, Any]:
    """The checked contents of ``directory/config.json``: format, version, ``geometry``, ``model``, ``layer_dim``."""
    if not (directory / "config.json").is_file():
        raise ModelError(f"{directory} is not a model directory (no config.json); train one with `calogen train`")
    try:
        meta = json.loads((directory / "config.json").read_text())
    except (ValueError, OSError) as exc:
        raise ModelError(f"{directory}/config.json cannot be read as JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{directory}/config.json must hold a JSON object, got a {type(meta).__name__}; the model directory is damaged")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ModelError(
            f"{directory}: format {meta.get('format')!r} version {meta.get('version')!r} is not "
            f"{FORMAT!r} version {VERSION}; retrain with this calogen"
        )
    missing = sorted({"geometry", "model", "layer_dim"} - set(meta))
    if missing:
        raise ModelError(f"{directory}/config.json lacks {missing}; the model directory is damaged")
    layer_dim = meta["layer_dim"]
    if isinstance(layer_dim, bool) or not isinstance(layer_dim, int) or layer_dim < 2:
        raise ModelError(f"{directory}/config.json: layer_dim must be an integer >= 2, got {layer_dim!r}")
    return meta


def check_preprocessing(directory: Path, preprocessor: Preprocessor, geometry: Geometry | CellGeometry, config: ModelConfig, layer_dim: int) -> None:
    """The preprocessing fits the geometry and the networks: voxel count, layer-vector and radial sizes."""
    groups = energy_groups(geometry, config.energy_groups)
    expected = {"voxel statistics": (preprocessor.voxel_mean.size, geometry.n_voxels),
                "layer-vector statistics": (preprocessor.layer_dim, layer_dim),
                "layer_dim": (layer_dim, 2 + int(groups.max()))}  # fmt: skip
    if config.radial_width:
        slots, n_r = radial_slots(geometry)
        expected["radial statistics"] = (preprocessor.radial_dim, len(model_layers(geometry)) * n_r)
    for what, (got, want) in expected.items():
        if got != want:
            raise ModelError(f"{directory}: {what} have size {got}, the geometry and model need {want}; the model directory is damaged")


def check_weights(directory: Path, state: dict[str, torch.Tensor]) -> None:
    """Every floating-point tensor of ``state`` is finite."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelError(f"{directory}/weights.safetensors: {name} holds NaN or inf; the file is damaged, copy it again or retrain")
