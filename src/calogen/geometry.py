"""Cylindrical calorimeter readout geometries in the CaloChallenge convention.

A :class:`Geometry` is a stack of readout layers. Each :class:`Layer` has radial bin edges (mm), a
number of azimuthal (alpha) bins and a depth extent ``(z_min, z_max)`` in mm along the shower axis.
Layers may be empty (no voxels, as in CaloChallenge dataset 1) and may differ from each other.

Voxel order is the CaloChallenge one: ``index = layer_offset + alpha_bin * n_r + r_bin``.
Alpha bin centres are the midpoints of ``linspace(-pi, pi, n_alpha + 1)``; the CaloChallenge
"eta" and "phi" of a voxel are ``r * cos(alpha)`` and ``r * sin(alpha)`` at the bin centres.

Example:
    >>> g = Geometry.builtin("ds2")
    >>> g.n_voxels, g.shape
    (6480, (45, 16, 9))
"""

from __future__ import annotations

import math
import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from calogen.errors import CalogenError

if TYPE_CHECKING:
    from calogen.cell_geometry import CellGeometry

__all__ = ["BUILTIN_GEOMETRIES", "Geometry", "GeometryError", "Layer", "resolve_geometry"]

PAR04_READOUT_DEPTH_MM = 3.4
"""Depth of one Par04 readout layer: two (1.4 mm W + 0.3 mm Si) pairs."""

DS23_THRESHOLD_MEV = 0.5e-3 / 0.033
"""CaloChallenge DS2/DS3 per-voxel threshold: 0.5 keV of silicon deposit, scaled by 1/0.033."""

DS1_THRESHOLD_MEV = 1.0
"""Per-voxel threshold used when evaluating dataset 1."""


class GeometryError(CalogenError):
    """A geometry definition or binning file is invalid."""


@dataclass(frozen=True)
class Layer:
    """One readout layer.

    Args:
        r_edges: radial bin edges in mm, increasing; a single edge means the layer is empty.
        n_alpha: number of azimuthal bins (1 = no alpha binning).
        z_range: depth extent ``(z_min, z_max)`` in mm along the shower axis.
    """

    r_edges: tuple[float, ...]
    n_alpha: int
    z_range: tuple[float, float]

    def __post_init__(self) -> None:
        edges = np.asarray(self.r_edges, dtype=float)
        if edges.ndim != 1 or edges.size < 1:
            raise GeometryError("a layer needs at least one radial edge")
        if not np.isfinite(edges).all():
            raise GeometryError(f"radial edges must be finite numbers, got {self.r_edges}")
        if np.any(np.diff(edges) <= 0) or edges[0] < 0:
            raise GeometryError(f"radial edges must be non-negative and increasing, got {self.r_edges}")
        if self.n_alpha < 1:
            raise GeometryError(f"n_alpha must be >= 1, got {self.n_alpha}")
        if not self.z_range[0] <= self.z_range[1]:
            raise GeometryError(f"z_range must satisfy z_min <= z_max, got {self.z_range}")

    @property
    def n_r(self) -> int:
        """Number of radial bins."""
        return len(self.r_edges) - 1

    @property
    def n_voxels(self) -> int:
        """Number of voxels in this layer (0 for an empty layer)."""
        return self.n_r * self.n_alpha

    @property
    def is_empty(self) -> bool:
        """True when the layer has no voxels."""
        return self.n_voxels == 0

    def alpha_centres(self) -> np.ndarray:
        """Alpha bin centres in radians, ``(n_alpha,)``, the first one nearest to -pi."""
        edges = np.linspace(-math.pi, math.pi, self.n_alpha + 1)
        return 0.5 * (edges[:-1] + edges[1:])

    def r_centres(self) -> np.ndarray:
        """Radial bin centres in mm, ``(n_r,)``."""
        edges = np.asarray(self.r_edges)
        return 0.5 * (edges[:-1] + edges[1:])


@dataclass(frozen=True)
class Geometry:
    """A cylindrical readout: a named stack of layers for one particle type.

    Args:
        name: identifier (``ds2``, or the stem of a binning file).
        particle: particle name as in the binning XML (``electron``, ``photon``, ``pion``).
        pid: PDG id as in the binning XML.
        layers: the readout layers, front to back.
        threshold: default per-voxel energy threshold in MeV applied by the evaluation.
    """

    name: str
    particle: str
    pid: int
    layers: tuple[Layer, ...]
    threshold: float = DS23_THRESHOLD_MEV
    kind: ClassVar[str] = "cylindrical"

    def __post_init__(self) -> None:
        if not self.layers:
            raise GeometryError("a geometry needs at least one layer")
        if self.n_voxels == 0:
            raise GeometryError("a geometry needs at least one voxel")

    # --- sizes and indexing -------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        """Number of layers, empty ones included."""
        return len(self.layers)

    @cached_property
    def layer_offsets(self) -> np.ndarray:
        """Voxel offset of every layer plus the total, ``(n_layers + 1,)``."""
        return np.concatenate([[0], np.cumsum([layer.n_voxels for layer in self.layers])]).astype(np.int64)

    @property
    def n_voxels(self) -> int:
        """Total number of voxels."""
        return int(sum(layer.n_voxels for layer in self.layers))

    @cached_property
    def nonempty_layers(self) -> tuple[int, ...]:
        """Indices of layers that have voxels."""
        return tuple(i for i, layer in enumerate(self.layers) if not layer.is_empty)

    @cached_property
    def alpha_binned_layers(self) -> tuple[int, ...]:
        """Indices of non-empty layers with more than one alpha bin."""
        return tuple(i for i in self.nonempty_layers if self.layers[i].n_alpha > 1)

    def layer_slice(self, layer: int) -> slice:
        """Slice of the voxel axis that holds ``layer``."""
        return slice(int(self.layer_offsets[layer]), int(self.layer_offsets[layer + 1]))

    def voxel_index(self, layer: int, alpha_bin: int, r_bin: int) -> int:
        """Flat voxel index of (layer, alpha bin, r bin)."""
        spec = self.layers[layer]
        if not (0 <= alpha_bin < spec.n_alpha and 0 <= r_bin < spec.n_r):
            raise IndexError(f"bin (alpha={alpha_bin}, r={r_bin}) outside layer {layer}")
        return int(self.layer_offsets[layer]) + alpha_bin * spec.n_r + r_bin

    @cached_property
    def is_regular(self) -> bool:
        """True when every layer has the same radial edges and alpha count and none is empty."""
        first = self.layers[0]
        return all(
            not layer.is_empty and layer.n_alpha == first.n_alpha and layer.r_edges == first.r_edges
            for layer in self.layers
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(layers, alpha, r)`` of a regular geometry."""
        if not self.is_regular:
            raise GeometryError(f"geometry {self.name!r} is irregular and has no (layer, alpha, r) shape")
        return (self.n_layers, self.layers[0].n_alpha, self.layers[0].n_r)

    def reshape(self, showers: np.ndarray) -> np.ndarray:
        """View ``(N, voxels)`` showers as ``(N, layers, alpha, r)`` (regular geometries only)."""
        showers = np.asarray(showers)
        if showers.shape[-1] != self.n_voxels:
            raise GeometryError(f"expected {self.n_voxels} voxels for {self.name!r}, got {showers.shape[-1]}")
        return showers.reshape(*showers.shape[:-1], *self.shape)

    def layer_energies(self, showers: np.ndarray) -> np.ndarray:
        """Energy per layer, ``(N, n_layers)``; empty layers hold 0."""
        showers = np.asarray(showers)
        out = np.zeros((showers.shape[0], self.n_layers), dtype=np.float64)
        for i in self.nonempty_layers:
            out[:, i] = showers[:, self.layer_slice(i)].sum(axis=1, dtype=np.float64)
        return out

    # --- voxel coordinates --------------------------------------------------------------------
    def _per_voxel(self, fn) -> np.ndarray:  # type: ignore[no-untyped-def]
        parts = [fn(i, layer) for i, layer in enumerate(self.layers) if not layer.is_empty]
        return np.concatenate(parts)

    @cached_property
    def voxel_layer(self) -> np.ndarray:
        """Layer index of every voxel, ``(n_voxels,)``."""
        return self._per_voxel(lambda i, layer: np.full(layer.n_voxels, i, dtype=np.int64))

    @cached_property
    def voxel_r(self) -> np.ndarray:
        """Radial bin centre of every voxel in mm, ``(n_voxels,)``."""
        return self._per_voxel(lambda i, layer: np.tile(layer.r_centres(), layer.n_alpha))

    @cached_property
    def voxel_alpha(self) -> np.ndarray:
        """Alpha bin centre of every voxel in radians, ``(n_voxels,)``."""
        return self._per_voxel(lambda i, layer: np.repeat(layer.alpha_centres(), layer.n_r))

    @cached_property
    def voxel_eta(self) -> np.ndarray:
        """CaloChallenge eta coordinate ``r cos(alpha)`` of every voxel in mm."""
        return self.voxel_r * np.cos(self.voxel_alpha)

    @cached_property
    def voxel_phi(self) -> np.ndarray:
        """CaloChallenge phi coordinate ``r sin(alpha)`` of every voxel in mm."""
        return self.voxel_r * np.sin(self.voxel_alpha)

    @cached_property
    def voxel_area(self) -> np.ndarray:
        """Transverse area of every voxel in mm^2, ``(n_voxels,)``."""

        def area(i: int, layer: Layer) -> np.ndarray:
            edges = np.asarray(layer.r_edges)
            ring = math.pi * (edges[1:] ** 2 - edges[:-1] ** 2) / layer.n_alpha
            return np.tile(ring, layer.n_alpha)

        return self._per_voxel(area)

    # --- XML ----------------------------------------------------------------------------------
    @classmethod
    def from_xml(
        cls,
        path: str | os.PathLike[str],
        *,
        particle: str | None = None,
        name: str | None = None,
        z_ranges: list[tuple[float, float]] | None = None,
        threshold: float | None = None,
    ) -> Geometry:
        """Read a CaloChallenge binning XML.

        Args:
            path: the XML file.
            particle: which ``<Bin name=...>`` to read; required when the file holds several.
            name: geometry name (default: the file stem).
            z_ranges: depth extent per layer; default: consecutive 3.4 mm Par04 readout layers.
            threshold: default per-voxel threshold (MeV); default 15.15 keV.
        """
        path = Path(path)
        try:
            root = ET.parse(path).getroot()
        except FileNotFoundError:
            raise GeometryError(f"binning file {path} does not exist") from None
        except ET.ParseError as exc:
            raise GeometryError(f"binning file {path} is not valid XML: {exc}") from None
        bins = [b for b in root if b.tag == "Bin"]
        if particle is not None:
            bins = [b for b in bins if b.attrib.get("name") == particle]
        if len(bins) != 1:
            found = [b.attrib.get("name") for b in root if b.tag == "Bin"]
            raise GeometryError(f"{path}: choose one particle of {found} (asked for {particle!r})")
        (entry,) = bins
        raw: list[tuple[tuple[float, ...], int]] = []
        for elem in entry:
            try:
                edges = tuple(float(s) for s in elem.attrib["r_edges"].split(","))
                n_alpha = int(elem.attrib["n_bin_alpha"])
            except (KeyError, ValueError) as exc:
                raise GeometryError(f"{path}: layer {elem.attrib.get('id')} is malformed ({exc})") from None
            raw.append((edges, n_alpha))
        if z_ranges is None:
            z_ranges = [(PAR04_READOUT_DEPTH_MM * i, PAR04_READOUT_DEPTH_MM * (i + 1)) for i in range(len(raw))]
        if len(z_ranges) != len(raw):
            raise GeometryError(f"{path}: {len(raw)} layers but {len(z_ranges)} depth ranges")
        layers = []
        for i, ((edges, n_alpha), z) in enumerate(zip(raw, z_ranges, strict=True)):
            try:
                layers.append(Layer(edges, n_alpha, tuple(z)))  # type: ignore[arg-type]
            except GeometryError as exc:
                raise GeometryError(f"{path}: layer {i}: {exc}") from None
        try:
            pid = int(entry.attrib.get("pid", "0"))
        except ValueError:
            raise GeometryError(f"{path}: pid {entry.attrib['pid']!r} is not an integer PDG id (e.g. 11 or 22)") from None
        return cls(
            name=name or path.stem,
            particle=entry.attrib.get("name", "unknown"),
            pid=pid,
            layers=tuple(layers),
            threshold=DS23_THRESHOLD_MEV if threshold is None else threshold,
        )

    def to_xml(self, path: str | os.PathLike[str]) -> None:
        """Write the binning as CaloChallenge XML (atomically)."""
        root = ET.Element("Bins")
        entry = ET.SubElement(root, "Bin", pid=str(self.pid), name=self.particle)
        for i, layer in enumerate(self.layers):
            ET.SubElement(
                entry,
                "Layer",
                id=str(i),
                r_edges=",".join(f"{e:g}" for e in layer.r_edges),
                n_bin_alpha=str(layer.n_alpha),
            )
        ET.indent(root, space="   ")
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                ET.ElementTree(root).write(fh, encoding="utf-8", xml_declaration=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # --- built-ins ----------------------------------------------------------------------------
    @classmethod
    def builtin(cls, name: str) -> Geometry:
        """A built-in geometry: one of :data:`BUILTIN_GEOMETRIES`."""
        try:
            factory = _BUILTINS[name]
        except KeyError:
            raise GeometryError(f"unknown geometry {name!r}; choose one of {sorted(_BUILTINS)} or give a binning XML") from None
        return factory()

    @classmethod
    def resolve(cls, spec: str | os.PathLike[str] | Geometry) -> Geometry:
        """A geometry from a built-in name, a binning XML path, or a Geometry (returned as is)."""
        if isinstance(spec, Geometry):
            return spec
        if str(spec) in _BUILTINS:
            return cls.builtin(str(spec))
        if Path(spec).suffix.lower() == ".xml":
            return cls.from_xml(spec)
        if str(spec) in _cell_builtins() or Path(spec).suffix.lower() == ".json":
            raise GeometryError(f"{spec} is a cell geometry; this command supports cylindrical geometries only")
        return cls.builtin(str(spec))


def _cell_builtins() -> tuple[str, ...]:
    from calogen.cell_geometry import BUILTIN_CELL_GEOMETRIES

    return BUILTIN_CELL_GEOMETRIES


def resolve_geometry(spec: str | os.PathLike[str] | Geometry | CellGeometry) -> Geometry | CellGeometry:
    """A cylindrical or cell geometry from a built-in name, a binning XML, a cell-geometry JSON, or a geometry."""
    from calogen.cell_geometry import CellGeometry

    if isinstance(spec, CellGeometry):
        return spec
    if str(spec) in _cell_builtins():
        return CellGeometry.builtin(str(spec))
    if isinstance(spec, Geometry) or str(spec) in _BUILTINS or Path(spec).suffix.lower() == ".xml":
        return Geometry.resolve(spec)
    if Path(spec).suffix.lower() == ".json":
        return CellGeometry.from_json(spec)
    known = sorted(_BUILTINS) + list(_cell_builtins())
    raise GeometryError(f"unknown geometry {str(spec)!r}; choose one of {known}, or give a binning XML or a cell-geometry JSON")


def _par04(name: str, n_r: int, dr: float, n_alpha: int) -> Geometry:
    """Par04 (DS2/DS3) readout: 45 layers of 3.4 mm, uniform radial bins."""
    edges = tuple(round(dr * k, 6) for k in range(n_r + 1))
    layers = tuple(
        Layer(edges, n_alpha, (PAR04_READOUT_DEPTH_MM * i, PAR04_READOUT_DEPTH_MM * (i + 1))) for i in range(45)
    )
    return Geometry(name=name, particle="electron", pid=11, layers=layers, threshold=DS23_THRESHOLD_MEV)


# DS1 (ATLAS-like) binnings, mapped onto the Par04 depth (153 mm, about 36 X0): presampler, strips,
# middle, back, then hadronic layers 12-14. Empty layers sit at the depth where they would start.
_DS1_DEPTHS = {
    0: (0.0, 3.4), 1: (3.4, 20.4), 2: (20.4, 88.4), 3: (88.4, 98.6),
    12: (98.6, 122.4), 13: (122.4, 139.4), 14: (139.4, 153.0),
}  # fmt: skip

_DS1_PHOTON_BINS: dict[int, tuple[tuple[float, ...], int]] = {
    0: ((0, 5, 10, 30, 50, 100, 200, 400, 600), 1),
    1: ((0, 2, 4, 6, 8, 10, 12, 15, 20, 30, 40, 50, 70, 90, 120, 150, 200), 10),
    2: ((0, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 130, 160, 200, 250, 300, 350, 400), 10),
    3: ((0, 50, 100, 200, 400, 600), 1),
    12: ((0, 100, 200, 400, 1000, 2000), 1),
}
_DS1_PION_BINS: dict[int, tuple[tuple[float, ...], int]] = {
    0: ((0, 5, 10, 30, 50, 100, 200, 400, 600), 1),
    1: ((0, 1, 4, 7, 10, 15, 30, 50, 90, 150, 200), 10),
    2: ((0, 5, 10, 20, 30, 50, 80, 130, 200, 300, 400), 10),
    3: ((0, 50, 100, 200, 400, 600), 1),
    12: ((0, 10, 20, 30, 50, 80, 100, 130, 160, 200, 250, 300, 350, 400, 1000, 2000), 10),
    13: ((0, 10, 20, 30, 50, 80, 100, 130, 160, 200, 250, 300, 350, 400, 600, 1000, 2000), 10),
    14: ((0, 50, 100, 150, 200, 250, 300, 400, 600, 1000, 2000), 1),
}


def _ds1(name: str, particle: str, pid: int, bins: dict[int, tuple[tuple[float, ...], int]]) -> Geometry:
    layers = []
    z_front = 0.0
    for i in range(24):
        z = _DS1_DEPTHS.get(i, (z_front, z_front))
        z_front = z[1]
        edges, n_alpha = bins.get(i, ((0.0,), 1))
        layers.append(Layer(tuple(float(e) for e in edges), n_alpha, z))
    return Geometry(name=name, particle=particle, pid=pid, layers=tuple(layers), threshold=DS1_THRESHOLD_MEV)


def _tiny() -> Geometry:
    """A small regular geometry for tests: 5 layers of 6.8 mm, 6 alpha x 4 r bins of 8 mm (120 voxels)."""
    edges = (0.0, 8.0, 16.0, 24.0, 32.0)
    layers = tuple(Layer(edges, 6, (6.8 * i, 6.8 * (i + 1))) for i in range(5))
    return Geometry(name="tiny", particle="electron", pid=11, layers=layers, threshold=DS23_THRESHOLD_MEV)


_BUILTINS = {
    "ds1-photons": lambda: _ds1("ds1-photons", "photon", 22, _DS1_PHOTON_BINS),
    "ds1-pions": lambda: _ds1("ds1-pions", "pion", 211, _DS1_PION_BINS),
    "ds2": lambda: _par04("ds2", 9, 4.65, 16),
    "ds3": lambda: _par04("ds3", 18, 2.325, 50),
    "tiny": _tiny,
}

BUILTIN_GEOMETRIES: tuple[str, ...] = tuple(_BUILTINS)
"""Names accepted by :meth:`Geometry.builtin`."""
