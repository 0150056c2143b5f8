"""The CMS HGCal-challenge file layout: reading, writing, conversion to calogen files, safe geometry import.

A challenge shower file holds ``showers`` ``(N, L, Vmax)`` and ``gen_info`` ``(N, 3)``. Row ``l`` of a
shower lists the deposits of layer ``l``'s cells in the geometry's order, zero-padded to ``Vmax`` (at least
the largest cell count of a layer). ``gen_info`` holds the primary's energy, pseudorapidity ``eta`` and
azimuth ``phi``. Energies (both datasets) are in GeV, as CMSSW writes them; the challenge's pickled
geometry gives cell centres in cm.

A calogen file holds ``incident_energies`` ``(N, 1)`` and ``showers`` ``(N, voxels)`` in MeV, voxel
``layer_offsets[l] + j`` being cell ``j`` of layer ``l``, and ``incident_directions`` ``(N, 2)``: the polar
angle ``theta`` of the primary to the layer normal (the z axis, the beam axis for an endcap) and ``phi``,
in radians. Pseudorapidity converts exactly as ``theta = 2 atan(exp(-eta))`` and back as
``eta = -ln tan(theta / 2)`` (``theta = 0``, normal incidence, is ``eta = inf``).

Conversion from the challenge writes float64 calogen datasets: ``1000 x`` of a float32 ``x`` is exact in
float64, so converting back gives the challenge file's arrays bit for bit (the padding width is kept in
the calogen file's ``hgcal_cells_per_layer`` attribute). Deposits are converted as they are (no
sampling-fraction correction).

The challenge's geometry is a pickled ``HGCalGeo`` object. :func:`load_hgcal_geometry` unpickles it with
an unpickler that only builds plain containers, numbers, strings and numpy arrays, and an inert stand-in
for ``HGCalGeo`` (attributes only): any other global is refused when the stream names it, before any call.

Example:
    >>> g = CellGeometry.builtin("tiny-hex")
    >>> flat = np.arange(2 * g.n_voxels, dtype=np.float32).reshape(2, -1)
    >>> padded = pad_showers(flat, g, 20)
    >>> padded.shape, bool((unpad_showers(padded, g) == flat).all())
    ((2, 3, 20), True)
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from calogen.cell_geometry import HGCAL_LIKE_LAYER_MM, CellGeometry, CellLayer
from calogen.errors import CalogenError
from calogen.geometry import GeometryError
from calogen.io import (
    DIRECTION_KEY,
    ENERGY_KEY,
    SHOWER_KEY,
    ShowerFile,
    check_directions,
)
from calogen.outputs import GuardedFile, atomic_path

try:
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]

__all__ = [
    "HGCalFile",
    "HGCalFormatError",
    "UnsafePickleError",
    "calogen_to_hgcal",
    "eta_to_theta",
    "geometry_from_hgcal",
    "hgcal_to_calogen",
    "load_hgcal_geometry",
    "pad_showers",
    "safe_unpickle",
    "theta_to_eta",
    "unpad_showers",
    "write_hgcal",
]

GEN_INFO_KEY = "gen_info"
GEV = 1000.0
"""MeV per GeV."""
CM = 10.0
"""mm per cm."""
DEFAULT_CHUNK = 256
WIDTH_ATTR = "hgcal_cells_per_layer"
"""calogen-file attribute: the padding width of the challenge file it was converted from."""


class HGCalFormatError(CalogenError):
    """A challenge file is malformed or disagrees with the geometry."""


class UnsafePickleError(CalogenError):
    """A pickle names something other than plain containers, numbers, strings and numpy arrays."""


# --- directions ---------------------------------------------------------------------------------
def eta_to_theta(eta: np.ndarray) -> np.ndarray:
    """Polar angle (rad) to the z axis of pseudorapidity ``eta``: ``2 atan(exp(-eta))``."""
    return 2.0 * np.arctan(np.exp(-np.asarray(eta, dtype=np.float64)))


def theta_to_eta(theta: np.ndarray) -> np.ndarray:
    """Pseudorapidity of polar angle ``theta`` (rad): ``-ln tan(theta / 2)``; inf at 0."""
    with np.errstate(divide="ignore"):
        return -np.log(np.tan(np.asarray(theta, dtype=np.float64) / 2.0))


# --- padding ------------------------------------------------------------------------------------
def pad_showers(showers: np.ndarray, geometry: CellGeometry, width: int | None = None) -> np.ndarray:
    """``(N, voxels)`` showers as ``(N, L, width)`` rows of cells, zero-padded (width default: ``max_cells``)."""
    width = geometry.max_cells if width is None else width
    if width < geometry.max_cells:
        raise HGCalFormatError(f"cannot pad to {width} cells: geometry {geometry.name!r} has {geometry.max_cells} in a layer")
    showers = np.asarray(showers)
    out = np.zeros((showers.shape[0], geometry.n_layers, width), dtype=showers.dtype)
    for i, layer in enumerate(geometry.layers):
        out[:, i, : layer.n_cells] = showers[:, geometry.layer_slice(i)]
    return out


def unpad_showers(padded: np.ndarray, geometry: CellGeometry, *, source: str = "showers", start: int = 0) -> np.ndarray:
    """``(N, L, Vmax)`` rows of cells as ``(N, voxels)``; energy in a padding cell is an error."""
    padded = np.asarray(padded)
    _check_layout(padded.shape, geometry, source)
    out = np.empty((padded.shape[0], geometry.n_voxels), dtype=padded.dtype)
    for i, layer in enumerate(geometry.layers):
        tail = padded[:, i, layer.n_cells :]
        if tail.size and tail.any():
            row, cell = (int(v) for v in np.argwhere(tail)[0])
            raise HGCalFormatError(
                f"{source}: shower {row + start} has energy in cell {layer.n_cells + cell} of layer {i}, but geometry "
                f"{geometry.name!r} has {layer.n_cells} cells there; pick the matching --geometry"
            )
        out[:, geometry.layer_slice(i)] = padded[:, i, : layer.n_cells]
    return out


def _check_layout(shape: tuple[int, ...], geometry: CellGeometry, source: str) -> None:
    if len(shape) != 3:
        raise HGCalFormatError(f"{source}: showers have shape {shape}; expected (N, layers, cells)")
    if shape[1] != geometry.n_layers:
        raise HGCalFormatError(f"{source}: showers have {shape[1]} layers but geometry {geometry.name!r} has {geometry.n_layers}; pick the matching --geometry")
    if shape[2] < geometry.max_cells:
        layer = int(np.argmax([layer.n_cells for layer in geometry.layers]))
        raise HGCalFormatError(
            f"{source}: showers have {shape[2]} cells per layer but layer {layer} of geometry {geometry.name!r} has "
            f"{geometry.max_cells}; pick the matching --geometry"
        )


# --- files --------------------------------------------------------------------------------------
class HGCalFile:
    """A validated, read-only handle on a challenge shower file.

    Args:
        path: the file.
        geometry: its cell geometry; layer count and cells per layer must agree with the file.
    """

    def __init__(self, path: str | os.PathLike[str], geometry: CellGeometry) -> None:
        self.path, self.geometry = Path(path), geometry
        if not self.path.is_file():
            raise HGCalFormatError(f"{self.path}: no such file")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise HGCalFormatError(f"{self.path}: not a readable HDF5 file ({exc})") from None
        try:
            self._showers, self._gen_info = self._check_structure()
        except BaseException:
            self._h5.close()
            raise

    def _check_structure(self) -> tuple[h5py.Dataset, h5py.Dataset]:
        missing = [k for k in (SHOWER_KEY, GEN_INFO_KEY) if not isinstance(self._h5.get(k), h5py.Dataset)]
        if missing:
            raise HGCalFormatError(f"{self.path}: missing dataset(s) {missing} of the HGCal-challenge format; found {sorted(self._h5)}")
        showers, gen_info = self._h5[SHOWER_KEY], self._h5[GEN_INFO_KEY]
        _check_layout(showers.shape, self.geometry, str(self.path))
        if gen_info.shape != (showers.shape[0], 3):
            raise HGCalFormatError(f"{self.path}: gen_info has shape {gen_info.shape}; expected ({showers.shape[0]}, 3) = (energy, eta, phi)")
        for key, ds in ((SHOWER_KEY, showers), (GEN_INFO_KEY, gen_info)):
            if ds.dtype.kind != "f":
                raise HGCalFormatError(f"{self.path}: {key} has dtype {ds.dtype}; expected floating point")
        return showers, gen_info

    @property
    def n_showers(self) -> int:
        """Number of showers N."""
        return int(self._showers.shape[0])

    @property
    def width(self) -> int:
        """Cells per layer row (Vmax) of the file."""
        return int(self._showers.shape[2])

    def read(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``[start, stop)``: showers ``(n, voxels)`` GeV and gen_info ``(n, 3)``, in the file's dtype, validated."""
        stop = self.n_showers if stop is None else min(stop, self.n_showers)
        try:
            padded, gen_info = self._showers[start:stop], self._gen_info[start:stop]
        except OSError as exc:
            raise HGCalFormatError(f"{self.path}: rows {start}-{stop} cannot be read ({exc})") from None
        if not (np.isfinite(padded).all() and (padded >= 0).all()):
            raise HGCalFormatError(f"{self.path}: showers {start}-{stop} hold NaN, inf or negative energies")
        if not (np.isfinite(gen_info[:, [0, 2]]).all() and (gen_info[:, 0] > 0).all() and not np.isnan(gen_info[:, 1]).any()):
            raise HGCalFormatError(f"{self.path}: gen_info rows {start}-{stop} need energy > 0 GeV, finite phi and an eta")
        return unpad_showers(padded, self.geometry, source=str(self.path), start=start), gen_info

    def close(self) -> None:
        """Close the HDF5 file."""
        self._h5.close()

    def __enter__(self) -> HGCalFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _h5_output(path: str | os.PathLike[str]) -> Iterator[h5py.File]:
    """A new HDF5 file that appears at ``path`` only when the block succeeds; a failed write is one error."""
    with atomic_path(path) as tmp:
        guarded = GuardedFile(tmp)
        try:
            with h5py.File(guarded, "w") as h5:
                yield h5
        finally:
            guarded.close()
        error = guarded.error(path)
        if error is not None:
            raise error


def write_hgcal(path: str | os.PathLike[str], showers: np.ndarray, gen_info: np.ndarray) -> None:
    """Write ``showers`` ``(N, L, Vmax)`` and ``gen_info`` ``(N, 3)`` (GeV) as a challenge file, atomically."""
    showers, gen_info = np.asarray(showers), np.asarray(gen_info)
    if showers.ndim != 3 or gen_info.shape != (showers.shape[0], 3):
        raise HGCalFormatError(f"need showers (N, L, Vmax) and gen_info (N, 3), got {showers.shape} and {gen_info.shape}")
    with _h5_output(path) as h5:
        h5.create_dataset(SHOWER_KEY, data=showers, compression="gzip")
        h5.create_dataset(GEN_INFO_KEY, data=gen_info, compression="gzip")


# --- conversion ---------------------------------------------------------------------------------
def hgcal_to_calogen(src: str | os.PathLike[str], dst: str | os.PathLike[str], geometry: CellGeometry, *, chunk: int = DEFAULT_CHUNK) -> int:
    """Convert a challenge file to a calogen file (float64, MeV, with directions); returns N."""
    with HGCalFile(src, geometry) as f, _h5_output(dst) as h5:
        n = f.n_showers
        energies = h5.create_dataset(ENERGY_KEY, (n, 1), dtype="f8")
        showers = h5.create_dataset(SHOWER_KEY, (n, geometry.n_voxels), dtype="f8", chunks=(max(1, min(chunk, n)), geometry.n_voxels), compression="gzip")
        directions = h5.create_dataset(DIRECTION_KEY, (n, 2), dtype="f8")
        for start in range(0, n, chunk):
            flat, gen_info = f.read(start, start + chunk)
            stop = start + flat.shape[0]
            gen_info = gen_info.astype(np.float64)
            energies[start:stop] = gen_info[:, :1] * GEV
            showers[start:stop] = flat.astype(np.float64) * GEV
            directions[start:stop] = np.stack([eta_to_theta(gen_info[:, 1]), gen_info[:, 2]], axis=1)
        h5.attrs["geometry"] = geometry.name
        h5.attrs["converted_from"] = "hgcal-challenge"
        h5.attrs[WIDTH_ATTR] = f.width
    return n


def calogen_to_hgcal(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    geometry: CellGeometry,
    *,
    direction: tuple[float, float] | None = None,
    width: int | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> int:
    """Convert a calogen file to a challenge file (float32, GeV); returns N.

    ``direction`` ``(eta, phi)`` is required when the file has no ``incident_directions``; ``width`` (Vmax)
    defaults to the file's ``hgcal_cells_per_layer`` attribute, else the geometry's ``max_cells``.
    """
    with ShowerFile(src, geometry) as checked:  # type: ignore[arg-type]
        has_directions = checked.has_directions
        width = width or int(checked.attrs.get(WIDTH_ATTR, geometry.max_cells))
    if not has_directions and direction is None:
        raise HGCalFormatError(f"{src} has no {DIRECTION_KEY}; give the primaries' --eta and --phi")
    if width < geometry.max_cells:
        raise HGCalFormatError(f"cannot pad to {width} cells per layer: geometry {geometry.name!r} has {geometry.max_cells} in a layer")
    with h5py.File(src, "r") as h5_in, _h5_output(dst) as h5:
        n = int(h5_in[SHOWER_KEY].shape[0])
        showers = h5.create_dataset(SHOWER_KEY, (n, geometry.n_layers, width), dtype="f4", compression="gzip")
        gen_info = h5.create_dataset(GEN_INFO_KEY, (n, 3), dtype="f4")
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            flat = np.asarray(h5_in[SHOWER_KEY][start:stop], dtype=np.float64)
            energy = np.asarray(h5_in[ENERGY_KEY][start:stop], dtype=np.float64).reshape(-1)
            _check_calogen_values(src, start, energy, flat)
            showers[start:stop] = pad_showers(flat / GEV, geometry, width).astype(np.float32)
            info = np.empty((stop - start, 3))
            info[:, 0] = energy / GEV
            if has_directions:
                theta_phi = np.asarray(h5_in[DIRECTION_KEY][start:stop], dtype=np.float64)
                check_directions(src, start, theta_phi)
                info[:, 1], info[:, 2] = theta_to_eta(theta_phi[:, 0]), theta_phi[:, 1]
            else:
                info[:, 1:] = direction
            gen_info[start:stop] = info.astype(np.float32)
    return n


def _check_calogen_values(src: str | os.PathLike[str], start: int, energy: np.ndarray, flat: np.ndarray) -> None:
    if not (np.isfinite(energy).all() and (energy > 0).all() and np.isfinite(flat).all() and (flat >= 0).all()):
        raise HGCalFormatError(f"{src}: rows from {start} hold NaN, inf, negative deposits or energies <= 0")


# --- safe geometry import -----------------------------------------------------------------------
class HGCalGeoRecord:
    """Inert stand-in for the challenge's ``HGCalGeo`` class: unpickling fills its attributes, nothing runs."""


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"refusing to build an array of type {subtype!r}")
    return _multiarray._reconstruct(subtype, shape, dtype)  # type: ignore[no-any-return]


def _dtype(*args: Any) -> np.dtype[Any]:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise UnsafePickleError("refusing a numpy dtype that holds Python objects")
    return dtype


def _scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise UnsafePickleError("refusing a numpy scalar that is not plain numeric data")
    return _multiarray.scalar(dtype, data)


_ALLOWED: dict[tuple[str, str], Any] = {
    **{("builtins", t.__name__): t for t in (list, dict, tuple, str, int, float)},
    ("numpy", "dtype"): _dtype,
    ("numpy", "ndarray"): np.ndarray,
    **{(m, "_reconstruct"): _reconstruct for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "scalar"): _scalar for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "HGCalGeo"): HGCalGeoRecord for m in ("HGCalGeo", "HGCalShowers.HGCalGeo")},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: a geometry pickle may hold only containers, numbers, strings and numpy arrays"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing a pickle with persistent references")


def safe_unpickle(data: bytes) -> Any:
    """Unpickle ``data`` allowing only plain containers, numbers, strings, numpy arrays and ``HGCalGeo`` records."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, RecursionError) as exc:
        raise UnsafePickleError(f"not a readable pickle ({type(exc).__name__}: {exc})") from None


def load_hgcal_geometry(path: str | os.PathLike[str], *, name: str | None = None, layer_depth: float = HGCAL_LIKE_LAYER_MM) -> CellGeometry:
    """The cell geometry of a challenge geometry pickle, unpickled safely (see :func:`safe_unpickle`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise GeometryError(f"geometry file {path} does not exist") from None
    except IsADirectoryError:
        raise GeometryError(f"{path} is a directory; give the challenge's geometry .pkl") from None
    try:
        obj = safe_unpickle(data)
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    try:
        return geometry_from_hgcal(obj, name=name or path.stem, layer_depth=layer_depth)
    except GeometryError as exc:
        raise GeometryError(f"{path}: {exc}") from None


def _field(fields: dict[str, Any], key: str, n_layers: int, default: float | None = None) -> np.ndarray:
    value = fields.get(key)
    if value is None and default is not None:
        return np.full((n_layers, 1), default)
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu" or value.ndim != 2 or value.shape[0] != n_layers:
        raise GeometryError(f"the geometry needs {key!r} as a numeric (layers, cells) array with {n_layers} layers")
    return value


def geometry_from_hgcal(obj: Any, *, name: str, layer_depth: float = HGCAL_LIKE_LAYER_MM) -> CellGeometry:
    """A :class:`CellGeometry` from an unpickled ``HGCalGeo`` (or a dict of its arrays).

    Uses ``ncells`` (cells per layer), ``xmap``, ``ymap`` (cm, from the central cell), and ``type_map``,
    ``ring_map`` when present. Layers get consecutive depths of ``layer_depth`` mm (the pickle has none),
    pitch 0 (the challenge's cells are not one regular lattice) and a width per cell equal to the distance
    to its nearest neighbour.
    """
    fields = vars(obj) if isinstance(obj, HGCalGeoRecord) else obj
    if not isinstance(fields, dict):
        raise GeometryError(f"expected an HGCalGeo object or a dict of its arrays, got {type(obj).__name__}")
    ncells = fields.get("ncells")
    if not isinstance(ncells, np.ndarray) or ncells.ndim != 1 or ncells.dtype.kind not in "fiu" or ncells.size == 0:
        raise GeometryError("the geometry needs 'ncells', a numeric array of cells per layer")
    n_layers = ncells.size
    xmap, ymap = _field(fields, "xmap", n_layers), _field(fields, "ymap", n_layers)
    types, rings = _field(fields, "type_map", n_layers, 0.0), _field(fields, "ring_map", n_layers, 0.0)
    layers = []
    for i, count in enumerate(ncells):
        n = round(float(count))
        if not 1 <= n <= xmap.shape[1] or ymap.shape[1] < n:
            raise GeometryError(f"layer {i} lists {count} cells but the maps hold {min(xmap.shape[1], ymap.shape[1])}")
        x, y = xmap[i, :n].astype(np.float64) * CM, ymap[i, :n].astype(np.float64) * CM
        cell_type = types[i, :n] if types.shape[1] >= n else np.zeros(n)
        ring = rings[i, :n] if rings.shape[1] >= n else np.zeros(n)
        z = (layer_depth * i, layer_depth * (i + 1))
        try:
            layers.append(CellLayer(x, y, np.rint(cell_type), np.rint(ring), 0.0, z, _nearest_distance(x, y)))
        except GeometryError as exc:
            raise GeometryError(f"layer {i}: {exc}") from None
    return CellGeometry(name, tuple(layers))


def _nearest_distance(x: np.ndarray, y: np.ndarray, block: int = 512) -> np.ndarray:
    """Distance (mm) from every point to its nearest other point; 12 mm for a lone cell."""
    if x.size == 1:
        return np.array([12.0])
    out = np.empty(x.size)
    for start in range(0, x.size, block):
        d = np.hypot(x[start : start + block, None] - x[None, :], y[start : start + block, None] - y[None, :])
        d[np.arange(d.shape[0]), np.arange(start, start + d.shape[0])] = np.inf
        out[start : start + block] = d.min(axis=1)
    return out
