"""Cell geometries: readout layers made of arbitrary cells (HGCal-like hexagons), with an O(1) hexagon lookup.

A :class:`CellGeometry` is a stack of :class:`CellLayer`. Each layer lists its cells' centres ``x``, ``y``
in mm relative to the layer's central cell, an integer cell type, the hexagonal ring of each cell around
the central one, and the layer's depth extent ``(z_min, z_max)`` in mm. Voxel order is layer by layer,
cells in the layer's order: ``index = layer_offsets[layer] + cell``.

Hexagons are flat-top, as in the HGCal challenge's geometry: a vertex points along +x, two flat edges
face +y and -y, so the six nearest neighbours of a cell lie at 30, 90, ..., 330 degrees from the x axis, one
``pitch`` (the flat-to-flat width) away. A centre sits at axial coordinates ``(q, r)`` with

    x = sqrt(3) / 2 * pitch * q,    y = pitch * (r + q / 2),
    q = 2 x / (sqrt(3) pitch),      r = (y - x / sqrt(3)) / pitch,

and its ring (hexagonal distance from the centre) is ``max(|q|, |r|, |q + r|)``. Built-in lattice
layers list the cells ring by ring, each ring counterclockwise from +x, as the HGCal challenge does.

Built-ins: ``hgcal-like`` (26 sampling layers of 7.8 mm, 10 rings of 12 mm cells: 331 cells per layer,
8606 voxels) and ``tiny-hex`` (3 layers, 2 rings: 19 cells per layer). Only one cell size is modelled.

Example:
    >>> g = CellGeometry.builtin("tiny-hex")
    >>> g.n_layers, g.n_voxels, g.max_cells
    (3, 57, 19)
    >>> t = g.lookup_tables()
    >>> int(cell_voxel(t.pitch, t.table, t.half, 1, 10.0, 6.0))  # layer 1, first cell of ring 1 (30 degrees)
    20
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numba as nb
import numpy as np

from calogen.geometry import GeometryError
from calogen.outputs import atomic_path

__all__ = [
    "BUILTIN_CELL_GEOMETRIES",
    "CellGeometry",
    "CellLayer",
    "CellTables",
    "cell_voxel",
    "hex_axial",
    "hexagonal_layer",
]

FORMAT = "calogen-cell-geometry"
"""Value of the ``format`` key of a cell-geometry JSON file."""
VERSION = 1
SQRT3 = math.sqrt(3.0)
LATTICE_TOLERANCE = 1e-3
"""Largest distance (in pitches) of a lattice layer's cell centre from its hexagon centre."""

HGCAL_LIKE_PITCH_MM = 12.0
"""Flat-to-flat width of the hgcal-like cells."""
HGCAL_LIKE_LAYER_MM = 7.8
"""Depth of one hgcal-like sampling layer: 4.5 mm Pb + 3.0 mm Cu + 0.3 mm Si."""


def hex_axial(x: np.ndarray, y: np.ndarray, pitch: float) -> tuple[np.ndarray, np.ndarray]:
    """Fractional axial coordinates ``(q, r)`` of points ``x``, ``y`` (mm) on a lattice of flat-to-flat ``pitch``."""
    return 2.0 * x / (SQRT3 * pitch), (y - x / SQRT3) / pitch


def _hex_round(q: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hexagon ``(q, r)`` (integers) to fractional axial coordinates, by cube-coordinate rounding."""
    s = -q - r
    qi, ri, si = np.rint(q), np.rint(r), np.rint(s)
    dq, dr, ds = np.abs(qi - q), np.abs(ri - r), np.abs(si - s)
    fix_q = (dq > dr) & (dq > ds)
    fix_r = ~fix_q & (dr > ds)
    qi = np.where(fix_q, -ri - si, qi)
    ri = np.where(fix_r, -qi - si, ri)
    return qi.astype(np.int64), ri.astype(np.int64)


def _ring(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    return np.maximum(np.maximum(np.abs(q), np.abs(r)), np.abs(q + r))


def _readonly(values: Any, dtype: type, what: str) -> np.ndarray:
    try:
        arr = np.array(values, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"cell {what} must be numbers: {exc}") from None
    if arr.ndim != 1:
        raise GeometryError(f"cell {what} must be a flat list, got shape {arr.shape}")
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class CellLayer:
    """One readout layer of cells.

    Args:
        x, y: cell centres in mm relative to the layer's central cell, ``(n_cells,)``.
        cell_type: integer label of each cell's kind (size, sensor), ``(n_cells,)``.
        ring: hexagonal ring of each cell around the central cell (0 = central), ``(n_cells,)``.
        pitch: flat-to-flat width (mm) of a regular hexagonal lattice holding every cell, or 0 if the
            layer is not one (then ``width`` is required and the layer has no O(1) lookup).
        z_range: depth extent ``(z_min, z_max)`` in mm.
        width: flat-to-flat width of each cell in mm, ``(n_cells,)``; default: ``pitch`` for every cell.
    """

    x: np.ndarray
    y: np.ndarray
    cell_type: np.ndarray
    ring: np.ndarray
    pitch: float
    z_range: tuple[float, float]
    width: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name, dtype in (("x", np.float64), ("y", np.float64), ("cell_type", np.int64), ("ring", np.int64)):
            object.__setattr__(self, name, _readonly(getattr(self, name), dtype, name))
        if self.width is not None:
            object.__setattr__(self, "width", _readonly(self.width, np.float64, "width"))
        object.__setattr__(self, "pitch", float(self.pitch))
        object.__setattr__(self, "z_range", (float(self.z_range[0]), float(self.z_range[1])))
        self._validate()

    def _validate(self) -> None:
        n = self.x.size
        if n == 0:
            raise GeometryError("a cell layer needs at least one cell")
        sizes = {"y": self.y.size, "cell_type": self.cell_type.size, "ring": self.ring.size}
        if self.width is not None:
            sizes["width"] = self.width.size
        bad = {k: v for k, v in sizes.items() if v != n}
        if bad:
            raise GeometryError(f"a layer with {n} cell x positions has {bad} entries; every per-cell list needs {n}")
        if not (np.isfinite(self.x).all() and np.isfinite(self.y).all()):
            raise GeometryError("cell centres must be finite numbers")
        if (self.ring < 0).any():
            raise GeometryError(f"cell rings must be >= 0, got {int(self.ring.min())}")
        if not (math.isfinite(self.pitch) and self.pitch >= 0):
            raise GeometryError(f"pitch must be a finite number >= 0 mm, got {self.pitch}")
        if self.width is None and self.pitch == 0:
            raise GeometryError("a layer that is not a hexagonal lattice (pitch 0) needs per-cell widths")
        if self.width is not None and not (np.isfinite(self.width).all() and (self.width > 0).all()):
            raise GeometryError("cell widths must be finite and > 0 mm")
        if not (math.isfinite(self.z_range[0]) and math.isfinite(self.z_range[1]) and self.z_range[0] < self.z_range[1]):
            raise GeometryError(f"z_range must be finite with z_min < z_max, got {self.z_range}")
        if self.pitch > 0:
            self._validate_lattice()

    def _validate_lattice(self) -> None:
        q, r = hex_axial(self.x, self.y, self.pitch)
        qi, ri = _hex_round(q, r)
        off = np.hypot(*(np.subtract((self.x, self.y), _lattice_xy(qi, ri, self.pitch)))) / self.pitch
        if off.max() > LATTICE_TOLERANCE:
            i = int(off.argmax())
            raise GeometryError(
                f"cell {i} at ({self.x[i]:g}, {self.y[i]:g}) mm is not on the hexagonal lattice of pitch {self.pitch:g} mm; "
                "fix the centre or give pitch 0 and per-cell widths"
            )
        keys = qi * 1_000_003 + ri
        if np.unique(keys).size != keys.size:
            raise GeometryError("two cells of a layer share one hexagon")
        if (_ring(qi, ri) != self.ring).any():
            i = int(np.argmax(_ring(qi, ri) != self.ring))
            raise GeometryError(f"cell {i} is in ring {int(_ring(qi, ri)[i])} of the lattice but lists ring {int(self.ring[i])}")

    @property
    def n_cells(self) -> int:
        """Number of cells."""
        return int(self.x.size)

    @cached_property
    def cell_width(self) -> np.ndarray:
        """Flat-to-flat width of every cell in mm, ``(n_cells,)``."""
        return self.width if self.width is not None else np.full(self.n_cells, self.pitch)

    @cached_property
    def axial(self) -> tuple[np.ndarray, np.ndarray]:
        """Integer axial coordinates ``(q, r)`` of every cell (lattice layers only)."""
        if self.pitch == 0:
            raise GeometryError("the layer is not a hexagonal lattice (pitch 0); it has no axial coordinates")
        return _hex_round(*hex_axial(self.x, self.y, self.pitch))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return {
            "x": self.x.tolist(),
            "y": self.y.tolist(),
            "cell_type": self.cell_type.tolist(),
            "ring": self.ring.tolist(),
            "pitch": self.pitch,
            "z_range": list(self.z_range),
            "width": None if self.width is None else self.width.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellLayer:
        """The layer described by :meth:`to_dict`'s output; unknown or missing keys are errors."""
        keys = {"x", "y", "cell_type", "ring", "pitch", "z_range", "width"}
        if not isinstance(data, dict):
            raise GeometryError(f"a layer must be a JSON object, got {type(data).__name__}")
        unknown, missing = set(data) - keys, keys - {"width"} - set(data)
        if unknown or missing:
            raise GeometryError(f"layer keys: unknown {sorted(unknown)}, missing {sorted(missing)}")
        z = data["z_range"]
        if not (isinstance(z, list) and len(z) == 2):
            raise GeometryError(f"z_range must be a list [z_min, z_max], got {z!r}")
        try:
            pitch = float(data["pitch"])
        except (TypeError, ValueError):
            raise GeometryError(f"pitch must be a number, got {data['pitch']!r}") from None
        return cls(data["x"], data["y"], data["cell_type"], data["ring"], pitch, (z[0], z[1]), data.get("width"))


def _lattice_xy(q: np.ndarray, r: np.ndarray, pitch: float) -> np.ndarray:
    return np.stack([pitch * SQRT3 / 2.0 * q, pitch * (r + 0.5 * q)])


def hexagonal_layer(rings: int, pitch: float, z_range: tuple[float, float], cell_type: int = 0) -> CellLayer:
    """A complete lattice layer: the central cell and ``rings`` rings around it (``1 + 3 rings (rings + 1)`` cells)."""
    if rings < 0:
        raise GeometryError(f"rings must be >= 0, got {rings}")
    q, r = (a.ravel() for a in np.meshgrid(np.arange(-rings, rings + 1), np.arange(-rings, rings + 1), indexing="ij"))
    ring = _ring(q, r)
    keep = ring <= rings
    q, r, ring = q[keep], r[keep], ring[keep]
    x, y = _lattice_xy(q, r, pitch)
    angle = np.mod(np.arctan2(y, x), 2.0 * math.pi)
    order = np.lexsort((np.round(angle, 9), ring))
    return CellLayer(x[order], y[order], np.full(q.size, cell_type), ring[order], pitch, z_range)


@dataclass(frozen=True)
class CellTables:
    """Flat arrays for compiled lookup, one row per layer in depth order (like ``ReadoutTables``).

    Attributes:
        z_lo, z_hi: depth extent of every layer in mm, ``(L,)`` float64, increasing, not overlapping.
        pitch: flat-to-flat width of every layer's lattice in mm, ``(L,)`` float64.
        offsets: voxel offset of every layer, ``(L,)`` int64.
        table: voxel index (offset included) of hexagon ``(q, r)`` in layer ``l`` at ``[l, q + half, r + half]``,
            -1 where the layer has no cell, ``(L, 2 half + 1, 2 half + 1)`` int64.
        half: largest ring of any cell.
    """

    z_lo: np.ndarray
    z_hi: np.ndarray
    pitch: np.ndarray
    offsets: np.ndarray
    table: np.ndarray
    half: int


@nb.njit(cache=True, nogil=True)
def cell_voxel(pitch: np.ndarray, table: np.ndarray, half: int, row: int, x: float, y: float) -> int:
    """Voxel index of the cell holding point ``(x, y)`` (mm from the central cell) in layer ``row``, or -1 outside."""
    p = pitch[row]
    qf = 2.0 * x / (1.7320508075688772 * p)
    rf = (y - x / 1.7320508075688772) / p
    sf = -qf - rf
    q, r, s = math.floor(qf + 0.5), math.floor(rf + 0.5), math.floor(sf + 0.5)
    dq, dr, ds = abs(q - qf), abs(r - rf), abs(s - sf)
    if dq > dr and dq > ds:
        q = -r - s
    elif dr > ds:
        r = -q - s
    iq, ir = int(q) + half, int(r) + half
    n = 2 * half + 1
    if iq < 0 or iq >= n or ir < 0 or ir >= n:
        return -1
    return table[row, iq, ir]


@dataclass(frozen=True, eq=False)
class CellGeometry:
    """A named stack of cell layers; the common interface of :class:`~calogen.geometry.Geometry` where it matters.

    Args:
        name: identifier (``hgcal-like``, or the stem of a geometry file).
        layers: the readout layers, front to back.
        threshold: per-cell energy (MeV) below which simulators and the evaluation zero a cell; default 0.
    """

    name: str
    layers: tuple[CellLayer, ...]
    threshold: float = 0.0
    kind: ClassVar[str] = "cells"

    def __post_init__(self) -> None:
        if not self.layers:
            raise GeometryError("a cell geometry needs at least one layer")
        object.__setattr__(self, "layers", tuple(self.layers))
        if not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise GeometryError(f"threshold must be a finite energy >= 0 MeV, got {self.threshold}")

    # --- sizes and indexing -------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        """Number of layers."""
        return len(self.layers)

    @cached_property
    def layer_offsets(self) -> np.ndarray:
        """Voxel offset of every layer plus the total, ``(n_layers + 1,)`` int64."""
        return np.concatenate([[0], np.cumsum([layer.n_cells for layer in self.layers])]).astype(np.int64)

    @property
    def n_voxels(self) -> int:
        """Total number of voxels (cells of all layers)."""
        return int(self.layer_offsets[-1])

    @property
    def max_cells(self) -> int:
        """Largest number of cells in one layer (the HGCal-challenge padding width)."""
        return max(layer.n_cells for layer in self.layers)

    def layer_slice(self, layer: int) -> slice:
        """Slice of the voxel axis that holds ``layer``."""
        return slice(int(self.layer_offsets[layer]), int(self.layer_offsets[layer + 1]))

    def layer_energies(self, showers: np.ndarray) -> np.ndarray:
        """Energy per layer, ``(N, n_layers)`` float64, of ``(N, n_voxels)`` showers."""
        showers = np.asarray(showers)
        if showers.ndim != 2 or showers.shape[1] != self.n_voxels:
            raise GeometryError(f"expected (N, {self.n_voxels}) showers for {self.name!r}, got shape {showers.shape}")
        return np.add.reduceat(showers.astype(np.float64, copy=False), self.layer_offsets[:-1], axis=1)

    # --- voxel coordinates --------------------------------------------------------------------
    def _per_voxel(self, attribute: str) -> np.ndarray:
        out = np.concatenate([np.asarray(getattr(layer, attribute)) for layer in self.layers])
        out.flags.writeable = False
        return out

    @cached_property
    def voxel_layer(self) -> np.ndarray:
        """Layer index of every voxel, ``(n_voxels,)`` int64."""
        return np.repeat(np.arange(self.n_layers, dtype=np.int64), np.diff(self.layer_offsets))

    @cached_property
    def cell_x(self) -> np.ndarray:
        """x of every voxel's centre in mm relative to its layer's central cell, ``(n_voxels,)``."""
        return self._per_voxel("x")

    @cached_property
    def cell_y(self) -> np.ndarray:
        """y of every voxel's centre in mm relative to its layer's central cell, ``(n_voxels,)``."""
        return self._per_voxel("y")

    @cached_property
    def cell_ring(self) -> np.ndarray:
        """Hexagonal ring of every voxel around its layer's central cell, ``(n_voxels,)``."""
        return self._per_voxel("ring")

    @cached_property
    def cell_area(self) -> np.ndarray:
        """Area of every voxel's hexagon in mm^2, ``(n_voxels,)``: ``sqrt(3) / 2 * width^2``."""
        return SQRT3 / 2.0 * self._per_voxel("cell_width") ** 2

    # --- compiled lookup ----------------------------------------------------------------------
    def lookup_tables(self) -> CellTables:
        """Tables for :func:`cell_voxel`; raises GeometryError unless every layer is a lattice and depths increase."""
        for i, layer in enumerate(self.layers):
            if layer.pitch == 0:
                raise GeometryError(f"{self.name}: layer {i} is not a hexagonal lattice (pitch 0) and has no O(1) lookup")
        z_lo = np.array([layer.z_range[0] for layer in self.layers])
        z_hi = np.array([layer.z_range[1] for layer in self.layers])
        if (z_lo[1:] < z_hi[:-1]).any():
            i = int(np.argmax(z_lo[1:] < z_hi[:-1]))
            raise GeometryError(f"{self.name}: layer {i + 1} starts at z = {z_lo[i + 1]:g} mm, inside layer {i}; layers must follow in depth")
        half = max(int(layer.ring.max()) for layer in self.layers)
        table = np.full((self.n_layers, 2 * half + 1, 2 * half + 1), -1, dtype=np.int64)
        for i, layer in enumerate(self.layers):
            q, r = layer.axial
            table[i, q + half, r + half] = self.layer_offsets[i] + np.arange(layer.n_cells)
        pitch = np.array([layer.pitch for layer in self.layers])
        return CellTables(z_lo, z_hi, pitch, self.layer_offsets[:-1].copy(), table, half)

    # --- files --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description."""
        layers = [layer.to_dict() for layer in self.layers]
        return {"format": FORMAT, "version": VERSION, "name": self.name, "threshold": self.threshold, "layers": layers}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "cell geometry") -> CellGeometry:
        """The geometry described by :meth:`to_dict`'s output; ``source`` names it in errors."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise GeometryError(f"{source}: not a calogen cell geometry (expected a JSON object with format {FORMAT!r})")
        if data.get("version") != VERSION:
            raise GeometryError(f"{source}: cell-geometry version {data.get('version')!r} is not supported (expected {VERSION})")
        unknown = set(data) - {"format", "version", "name", "threshold", "layers"}
        if unknown or not isinstance(data.get("layers"), list) or not isinstance(data.get("name"), str):
            raise GeometryError(f"{source}: needs a string 'name' and a list 'layers' (unknown keys: {sorted(unknown)})")
        layers = []
        for i, entry in enumerate(data["layers"]):
            try:
                layers.append(CellLayer.from_dict(entry))
            except GeometryError as exc:
                raise GeometryError(f"{source}: layer {i}: {exc}") from None
        try:
            return cls(data["name"], tuple(layers), float(data.get("threshold", 0.0)))
        except (GeometryError, TypeError, ValueError) as exc:
            raise GeometryError(f"{source}: {exc}") from None

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write the geometry as JSON (atomically)."""
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict()) + "\n")

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> CellGeometry:
        """Read a geometry written by :meth:`to_json`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise GeometryError(f"cell-geometry file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise GeometryError(f"{path}: not a readable JSON cell geometry ({exc})") from None
        return cls.from_dict(data, source=str(path))

    # --- built-ins ----------------------------------------------------------------------------
    @classmethod
    def builtin(cls, name: str) -> CellGeometry:
        """A built-in cell geometry: one of :data:`BUILTIN_CELL_GEOMETRIES`."""
        if name not in BUILTIN_CELL_GEOMETRIES:
            raise GeometryError(f"unknown cell geometry {name!r}; choose one of {list(BUILTIN_CELL_GEOMETRIES)} or give a JSON file")
        rings, n_layers = {"hgcal-like": (10, 26), "tiny-hex": (2, 3)}[name]
        layers = tuple(
            hexagonal_layer(rings, HGCAL_LIKE_PITCH_MM, (HGCAL_LIKE_LAYER_MM * i, HGCAL_LIKE_LAYER_MM * (i + 1)))
            for i in range(n_layers)
        )
        return cls(name, layers)


BUILTIN_CELL_GEOMETRIES: tuple[str, ...] = ("hgcal-like", "tiny-hex")
"""Names accepted by :meth:`CellGeometry.builtin`."""
