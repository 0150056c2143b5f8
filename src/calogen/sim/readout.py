"""Scoring energy deposits into the voxels of any :class:`~calogen.geometry.Geometry`.

The readout knows nothing about physics: it maps a point ``(x, y, z)`` in mm (z along the shower axis,
z = 0 at the calorimeter front) to a flat voxel index, or -1 when the point lies outside every voxel
(beyond the last radial edge, in front of or behind the layers, or in an empty layer).

Layer ``i`` covers ``z_lo[i] <= z < z_hi[i]``; radial bin ``k`` covers ``r_edges[k] <= r < r_edges[k+1]``;
alpha = atan2(y, x) is binned uniformly on [-pi, pi). The arrays live in a :class:`ReadoutTables`
so that compiled transport code can call :func:`voxel_index` without Python objects.

**Incidence.** A primary enters the front face at ``entry`` with polar angle ``theta`` to the layer normal (the
z axis) and azimuth ``phi`` (:class:`Incidence`). Every layer's bins are centred where the primary's
extrapolated straight trajectory crosses the layer's depth centre, as CaloChallenge/Par04 centres its
cylinders on the particle's direction; cell layers are placed relative to the *central cell*, the detector
cell under that crossing (the cell lattice is fixed in the detector, with a cell centred on the origin), as
the HGCal challenge does. :class:`ReadoutArrays` holds either kind of readout with these centres for
compiled code, and :func:`point_voxel` maps a point to its voxel; :func:`score_points` scores many.

Searches cost O(1) for evenly spaced layers and radial bins (DS2, DS3) and O(log n) otherwise: the
bin is guessed by linear interpolation between the first and last edge and, when the guess misses,
found by bisection on the side it missed; :func:`layer_row` first tries a hinted row (the previous
point's). atan2 is evaluated only in layers with several alpha bins. Compiled callers that know a
point's polar coordinates, or score runs of nearby points, call :func:`layer_row` and :func:`row_voxel`
themselves.

Example:
    >>> from calogen.geometry import Geometry
    >>> t = ReadoutTables.from_geometry(Geometry.builtin("ds2"))
    >>> int(voxel_index(t.z_lo, t.z_hi, t.r_edges, t.n_r, t.n_alpha, t.offsets, 1.0, 0.0, 1.0))
    72
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numba as nb
import numpy as np

from calogen.cell_geometry import CellGeometry, cell_voxel
from calogen.errors import CalogenError
from calogen.geometry import Geometry, GeometryError

__all__ = [
    "CALOCHALLENGE_SAMPLING_SCALE",
    "Incidence",
    "IncidenceError",
    "ReadoutArrays",
    "ReadoutTables",
    "layer_row",
    "point_voxel",
    "readout_arrays",
    "row_voxel",
    "score_deposits",
    "score_points",
    "theta_from_eta",
    "voxel_index",
]

CALOCHALLENGE_SAMPLING_SCALE = 1.0 / 0.033
"""CaloChallenge DS2/DS3 convention: silicon deposits are divided by the 3.3% sampling fraction."""


class IncidenceError(CalogenError):
    """An invalid incident direction or entry point."""


def theta_from_eta(eta: float) -> float:
    """Polar angle (rad) from the beam axis of pseudorapidity ``eta``: ``theta = 2 atan(exp(-eta))``.

    For an endcap calorimeter, whose layers are normal to the beam, this is also the angle to the layer
    normal: eta 2.0 gives 0.2690 rad (15.4 degrees).
    """
    return 2.0 * math.atan(math.exp(-eta))


@dataclass(frozen=True)
class Incidence:
    """Direction and entry point of the primary.

    Args:
        theta: polar angle to the layer normal (the z axis), rad, in [0, pi/2).
        phi: azimuth of the direction from the x axis, rad, in [-2 pi, 2 pi].
        entry: (x, y) where the primary crosses the front face z = 0, mm.

    Example:
        >>> Incidence(theta=0.3, phi=0.0).crossing(np.array([10.0]))[0].round(3)
        array([3.093])
    """

    theta: float = 0.0
    phi: float = 0.0
    entry: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if not (isinstance(self.theta, (int, float)) and 0.0 <= self.theta < math.pi / 2):
            raise IncidenceError(f"theta must lie in [0, pi/2) rad (to the layer normal), got {self.theta!r}")
        if not (isinstance(self.phi, (int, float)) and abs(self.phi) <= 2.0 * math.pi):
            raise IncidenceError(f"phi must lie in [-2 pi, 2 pi] rad, got {self.phi!r}")
        if len(self.entry) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in self.entry):
            raise IncidenceError(f"entry must be two finite numbers (x, y) in mm, got {self.entry!r}")
        object.__setattr__(self, "theta", float(self.theta))
        object.__setattr__(self, "phi", float(self.phi))
        object.__setattr__(self, "entry", (float(self.entry[0]), float(self.entry[1])))

    @classmethod
    def from_eta(cls, eta: float, phi: float = 0.0, entry: tuple[float, float] = (0.0, 0.0)) -> Incidence:
        """The incidence of pseudorapidity ``eta`` (> 0; see :func:`theta_from_eta`) and azimuth ``phi``."""
        if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta > 0):
            raise IncidenceError(f"eta must be a finite number > 0 (a direction into the calorimeter), got {eta!r}")
        return cls(theta_from_eta(eta), phi, entry)

    @property
    def is_normal(self) -> bool:
        """True for normal incidence through the origin (the default)."""
        return self.theta == 0.0 and self.entry == (0.0, 0.0)

    def direction(self) -> tuple[float, float, float]:
        """Unit direction ``(ux, uy, uz)``; exactly ``(0, 0, 1)`` at theta = 0."""
        if self.theta == 0.0:
            return 0.0, 0.0, 1.0
        s = math.sin(self.theta)
        return s * math.cos(self.phi), s * math.sin(self.phi), math.cos(self.theta)

    def crossing(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) in mm where the straight trajectory crosses depths ``z`` (mm)."""
        slope = math.tan(self.theta)
        z = np.asarray(z, dtype=np.float64)
        return self.entry[0] + z * slope * math.cos(self.phi), self.entry[1] + z * slope * math.sin(self.phi)

    def to_frame(self, x: np.ndarray, y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detector coordinates of points given in the shower frame: ``s`` along the axis from the entry point,
        ``(x, y)`` across it (mm). The transverse axes are ``(cos theta cos phi, cos theta sin phi, -sin theta)``
        and ``(-sin phi, cos phi, 0)``."""
        (ux, uy, uz), ct, st = self.direction(), math.cos(self.theta), math.sin(self.theta)
        cp, sp = math.cos(self.phi), math.sin(self.phi)
        return (
            self.entry[0] + s * ux + x * ct * cp - y * sp,
            self.entry[1] + s * uy + x * ct * sp + y * cp,
            s * uz - x * st,
        )


@dataclass(frozen=True)
class ReadoutTables:
    """Flat arrays describing a geometry for compiled code.

    Rows are the geometry's non-empty layers (at least one radial bin, non-zero depth) in depth order;
    their depth ranges do not overlap, which is what lets :func:`layer_row` search them. ``offsets``
    keeps every row's place in the CaloChallenge voxel order.

    Attributes:
        z_lo, z_hi: depth extent of every row in mm, ``(L,)`` float64, increasing.
        r_edges: radial edges padded with +inf, ``(L, max_n_r + 1)`` float64.
        n_r, n_alpha, offsets: per-row radial bins, alpha bins and voxel offset, ``(L,)`` int64.
        n_voxels: total number of voxels.
    """

    z_lo: np.ndarray
    z_hi: np.ndarray
    r_edges: np.ndarray
    n_r: np.ndarray
    n_alpha: np.ndarray
    offsets: np.ndarray
    n_voxels: int

    @classmethod
    def from_geometry(cls, geometry: Geometry) -> ReadoutTables:
        """Build the tables of ``geometry``; raises GeometryError if two non-empty layers overlap in depth."""
        offsets = geometry.layer_offsets[:-1]
        rows = sorted(
            (i for i, layer in enumerate(geometry.layers) if layer.n_r > 0 and layer.z_range[1] > layer.z_range[0]),
            key=lambda i: geometry.layers[i].z_range[0],
        )
        for a, b in zip(rows, rows[1:], strict=False):
            za, zb = geometry.layers[a].z_range, geometry.layers[b].z_range
            if zb[0] < za[1]:
                raise GeometryError(
                    f"layers {a} {za} and {b} {zb} of geometry {geometry.name!r} overlap in depth; "
                    "give non-empty layers disjoint z ranges"
                )
        layers = [geometry.layers[i] for i in rows]
        r_edges = np.full((len(layers), max((len(layer.r_edges) for layer in layers), default=1)), np.inf)
        for i, layer in enumerate(layers):
            r_edges[i, : len(layer.r_edges)] = layer.r_edges
        return cls(
            z_lo=np.array([layer.z_range[0] for layer in layers], dtype=np.float64),
            z_hi=np.array([layer.z_range[1] for layer in layers], dtype=np.float64),
            r_edges=r_edges,
            n_r=np.array([layer.n_r for layer in layers], dtype=np.int64),
            n_alpha=np.array([layer.n_alpha for layer in layers], dtype=np.int64),
            offsets=np.array([offsets[i] for i in rows], dtype=np.int64),
            n_voxels=geometry.n_voxels,
        )


@nb.njit(cache=True, nogil=True, inline="always")
def _find(edges: np.ndarray, n: int, x: float) -> int:
    """The bin ``i`` in [0, n) with ``edges[i] <= x < edges[i + 1]``, given ``edges[0] <= x < edges[n]`` (increasing edges).

    Guesses ``i`` by linear interpolation between ``edges[0]`` and ``edges[n]`` (exact for even bins), then
    bisects the side the guess missed.
    """
    i = min(int((x - edges[0]) / (edges[n] - edges[0]) * n), n - 1)
    if x < edges[i]:
        lo, hi = 0, i
    elif x >= edges[i + 1]:
        lo, hi = i + 1, n
    else:
        return i
    while hi - lo > 1:  # edges[lo] <= x < edges[hi]
        mid = (lo + hi) // 2
        if x >= edges[mid]:
            lo = mid
        else:
            hi = mid
    return lo


@nb.njit(cache=True, nogil=True, inline="always")
def layer_row(z_lo: np.ndarray, z_hi: np.ndarray, z: float, hint: int = -1) -> int:
    """Row of the :class:`ReadoutTables` layer holding depth ``z`` (mm), or -1 (gap, outside or NaN).

    ``hint`` (e.g. the previous point's row) is tried first, which makes runs of points in one layer cheap.
    """
    if hint >= 0 and z >= z_lo[hint] and z < z_hi[hint]:
        return hint
    n = z_lo.shape[0]
    if n == 0 or not (z >= z_lo[0] and z < z_hi[n - 1]):
        return -1
    row = n - 1 if z >= z_lo[n - 1] else _find(z_lo, n - 1, z)
    return row if z < z_hi[row] else -1


@nb.njit(cache=True, nogil=True, inline="always")
def row_voxel(edges: np.ndarray, n_r: int, n_alpha: int, offset: int, r: float, turn: float) -> int:
    """Voxel at radius ``r`` (mm) and azimuth fraction ``turn`` in one layer, or -1 outside its radial range.

    ``edges``, ``n_r``, ``n_alpha`` and ``offset`` are the layer's row of the :class:`ReadoutTables`
    (scalars rather than whole tables keep compiled callers free of reference counting).
    ``turn = (atan2(y, x) + pi) / (2 pi)`` in [0, 1]; a point at angle ``phi`` from the x axis has
    ``turn = (phi / (2 pi) + 1/2) mod 1``.
    """
    if not (r >= edges[0] and r < edges[n_r]):
        return -1
    a = min(int(turn * n_alpha), n_alpha - 1)
    return offset + a * n_r + _find(edges, n_r, r)


@nb.njit(cache=True, nogil=True, inline="always")
def voxel_index(
    z_lo: np.ndarray,
    z_hi: np.ndarray,
    r_edges: np.ndarray,
    n_r: np.ndarray,
    n_alpha: np.ndarray,
    offsets: np.ndarray,
    x: float,
    y: float,
    z: float,
) -> int:
    """Flat voxel index of the point (x, y, z) in mm, or -1 outside the readout."""
    row = layer_row(z_lo, z_hi, z)
    if row < 0:
        return -1
    na = n_alpha[row]
    turn = 0.0 if na == 1 else (math.atan2(y, x) + math.pi) / (2.0 * math.pi)
    return row_voxel(r_edges[row], n_r[row], na, offsets[row], math.sqrt(x * x + y * y), turn)


class ReadoutArrays(NamedTuple):
    """A cylindrical or cell readout with per-layer centres, for compiled code (:func:`point_voxel`).

    Rows are layers in depth order. ``cx, cy`` ``(L,)`` mm: where every row's bins are centred (cylinders) or
    where its central cell sits (cells). Cylindrical rows use ``r_edges, n_r, n_alpha, offsets`` (as in
    :class:`ReadoutTables`); cell rows use ``pitch (L,)``, ``table (L, 2 half + 1, 2 half + 1)`` and ``half`` of
    a :class:`~calogen.cell_geometry.CellTables`. ``cells`` is 1 for a cell readout; the other kind's arrays
    are placeholders.
    """

    z_lo: np.ndarray
    z_hi: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    r_edges: np.ndarray
    n_r: np.ndarray
    n_alpha: np.ndarray
    offsets: np.ndarray
    pitch: np.ndarray
    table: np.ndarray
    half: int
    cells: int


def _central_cells(tables: Any, geometry: CellGeometry, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre of the detector cell holding every row's crossing (x, y); the crossing itself beyond the last ring."""
    cx, cy = x.copy(), y.copy()
    for row in range(x.size):
        v = int(cell_voxel(tables.pitch, tables.table, tables.half, row, float(x[row]), float(y[row])))
        if v >= 0:
            cx[row], cy[row] = geometry.cell_x[v], geometry.cell_y[v]
    return cx, cy


def readout_arrays(geometry: Geometry | CellGeometry, incidence: Incidence = Incidence()) -> ReadoutArrays:
    """The :class:`ReadoutArrays` of ``geometry`` for a primary arriving with ``incidence``."""
    if isinstance(geometry, CellGeometry):
        t = geometry.lookup_tables()
        n = t.z_lo.size
        cx, cy = _central_cells(t, geometry, *incidence.crossing(0.5 * (t.z_lo + t.z_hi)))
        return ReadoutArrays(
            t.z_lo, t.z_hi, cx, cy, np.full((n, 1), np.inf), np.zeros(n, np.int64), np.ones(n, np.int64), t.offsets,
            t.pitch, t.table, int(t.half), 1,
        )  # fmt: skip
    r = ReadoutTables.from_geometry(geometry)
    n = r.z_lo.size
    cx, cy = incidence.crossing(0.5 * (r.z_lo + r.z_hi))
    return ReadoutArrays(
        r.z_lo, r.z_hi, cx, cy, r.r_edges, r.n_r, r.n_alpha, r.offsets,
        np.zeros(n), np.full((n, 1, 1), -1, dtype=np.int64), 0, 0,
    )  # fmt: skip


@nb.njit(cache=True, nogil=True, inline="always")
def point_voxel(ro: ReadoutArrays, x: float, y: float, z: float, hint: int = -1) -> tuple[int, int]:
    """Voxel of the point (x, y, z) mm in the detector frame (-1 outside) and its row (``hint`` first, -1 outside)."""
    row = layer_row(ro.z_lo, ro.z_hi, z, hint)
    if row < 0:
        return -1, row
    px, py = x - ro.cx[row], y - ro.cy[row]
    if ro.cells:
        return cell_voxel(ro.pitch, ro.table, ro.half, row, px, py), row
    na = ro.n_alpha[row]
    turn = 0.0 if na == 1 else (math.atan2(py, px) + math.pi) / (2.0 * math.pi)
    return row_voxel(ro.r_edges[row], ro.n_r[row], na, ro.offsets[row], math.sqrt(px * px + py * py), turn), row


@nb.njit(cache=True)
def _score_points(ro: ReadoutArrays, x: np.ndarray, y: np.ndarray, z: np.ndarray, e: np.ndarray, out: np.ndarray) -> float:
    outside = 0.0
    row = -1
    for k in range(x.shape[0]):
        v, row = point_voxel(ro, x[k], y[k], z[k], row)
        if v < 0:
            outside += e[k]
        else:
            out[v] += e[k]
    return outside


def score_points(ro: ReadoutArrays, x: np.ndarray, y: np.ndarray, z: np.ndarray, e: np.ndarray, out: np.ndarray) -> float:
    """Add energies ``e`` at detector points (x, y, z) (mm, ``(K,)`` each) to ``out`` ``(n_voxels,)`` float64.

    Returns the energy that fell outside the readout.
    """
    arrays = [np.ascontiguousarray(a, dtype=np.float64) for a in (x, y, z, e)]
    return float(_score_points(ro, *arrays, out))


@nb.njit(cache=True)
def _score(
    z_lo: np.ndarray,
    z_hi: np.ndarray,
    r_edges: np.ndarray,
    n_r: np.ndarray,
    n_alpha: np.ndarray,
    offsets: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    e: np.ndarray,
    scale: float,
    out: np.ndarray,
) -> float:
    outside = 0.0
    for k in range(x.shape[0]):
        v = voxel_index(z_lo, z_hi, r_edges, n_r, n_alpha, offsets, x[k], y[k], z[k])
        if v < 0:
            outside += e[k]
        else:
            out[v] += e[k] * scale
    return outside


def score_deposits(
    tables: ReadoutTables,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    e: np.ndarray,
    *,
    scale: float = 1.0,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Add deposits ``e`` (MeV) at points (x, y, z) (mm) to a voxel array.

    Args:
        tables: readout of the target geometry.
        x, y, z, e: deposit positions and energies, ``(K,)`` each.
        scale: factor applied to every scored deposit (e.g. :data:`CALOCHALLENGE_SAMPLING_SCALE`).
        out: ``(n_voxels,)`` float64 accumulator; a new zero array when omitted.

    Returns:
        The accumulator and the unscaled energy of deposits that fell outside the readout.
    """
    if out is None:
        out = np.zeros(tables.n_voxels, dtype=np.float64)
    arrays = [np.ascontiguousarray(a, dtype=np.float64) for a in (x, y, z, e)]
    outside = _score(
        tables.z_lo, tables.z_hi, tables.r_edges, tables.n_r, tables.n_alpha, tables.offsets, *arrays, float(scale), out
    )
    return out, float(outside)
