"""Reading, validating, streaming and atomically writing CaloChallenge HDF5 shower files.

A shower file holds ``incident_energies`` with shape ``(N, 1)`` in MeV and ``showers`` with shape
``(N, voxels)`` in MeV. Opening a file checks its structure (keys, dtypes, shapes, voxel count against
a geometry); values (NaN/inf, negative energies) are checked chunk by chunk as they are read, so a
100k x 40500 DS3 file is validated while it streams and never has to fit in memory.

A file may also carry ``incident_directions`` with shape ``(N, 2)``: the polar angle ``theta`` of the
primary to the layer normal (the z axis) and its azimuth ``phi``, both in radians, with
``0 <= theta < pi / 2`` and ``|phi| <= 2 pi``. Files without it are showers at normal incidence.
HGCal-challenge pseudorapidity converts as ``theta = 2 atan(exp(-eta))`` (see :mod:`calogen.hgcal_format`).

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "s.h5")
    >>> write_showers(path, np.full((3, 1), 1e3), np.ones((3, 120)))
    >>> with ShowerFile(path) as f:
    ...     f.n_showers, f.n_voxels
    (3, 120)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from calogen.errors import CalogenError
from calogen.geometry import Geometry
from calogen.outputs import GuardedFile, OutputPathError, atomic_path

if TYPE_CHECKING:
    from calogen.cell_geometry import CellGeometry

__all__ = [
    "ShowerData",
    "ShowerFile",
    "ShowerFileError",
    "ShowerWriter",
    "OutputPathError",
    "atomic_path",
    "check_directions",
    "file_sha256",
    "read_showers",
    "write_showers",
]

ENERGY_KEY = "incident_energies"
DIRECTION_KEY = "incident_directions"
SHOWER_KEY = "showers"
DEFAULT_CHUNK = 10_000


class ShowerFileError(CalogenError):
    """A shower file is missing, unreadable or does not follow the CaloChallenge format."""


@dataclass(frozen=True)
class ShowerData:
    """Showers held in memory: ``energies`` ``(N, 1)`` MeV and ``showers`` ``(N, voxels)`` MeV, float32.

    ``directions`` ``(N, 2)`` float32 (theta, phi) in radians, or None for a file without them.
    """

    energies: np.ndarray
    showers: np.ndarray
    directions: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.energies.shape[0])


def _check_values(path: Path, start: int, energies: np.ndarray, showers: np.ndarray) -> None:
    """Raise :class:`ShowerFileError` naming the first bad row of a chunk that starts at row ``start``."""
    # Fast path: min and max propagate NaN and expose inf, so two reductions (no temporaries) clear good data.
    if all(
        arr.size == 0 or (np.isfinite(lo := arr.min()) and np.isfinite(arr.max()) and lo >= floor)
        for arr, floor in ((energies, np.finfo(np.float32).tiny), (showers, 0.0))
    ):
        return
    for key, arr in ((ENERGY_KEY, energies), (SHOWER_KEY, showers)):
        finite = np.isfinite(arr)
        if not finite.all():
            row = int(np.argwhere(~finite)[0][0]) + start
            raise ShowerFileError(f"{path}: {key} holds NaN or inf (first at row {row})")
    if (energies <= 0).any():
        row = int(np.argwhere(energies <= 0)[0][0]) + start
        raise ShowerFileError(f"{path}: {ENERGY_KEY} must be > 0 MeV (row {row} holds {energies[row - start, 0]:g})")
    if (showers < 0).any():
        row, col = (int(v) for v in np.argwhere(showers < 0)[0])
        raise ShowerFileError(
            f"{path}: {SHOWER_KEY} holds a negative energy ({showers[row, col]:g} MeV at row {row + start}, voxel {col})"
        )


def check_directions(path: str | os.PathLike[str], start: int, directions: np.ndarray) -> None:
    """Raise :class:`ShowerFileError` naming the first row of ``directions`` ``(n, 2)`` out of range."""
    theta, phi = directions[:, 0], directions[:, 1]
    bad = ~((theta >= 0) & (theta < np.pi / 2) & (np.abs(phi) <= 2 * np.pi))
    if bad.any():
        row = int(np.argmax(bad))
        raise ShowerFileError(
            f"{path}: {DIRECTION_KEY} row {row + start} holds (theta, phi) = ({theta[row]:g}, {phi[row]:g}) rad; "
            "need 0 <= theta < pi/2 and |phi| <= 2 pi"
        )


class ShowerFile:
    """A validated, read-only handle on a CaloChallenge HDF5 file.

    Args:
        path: the file.
        geometry: when given, the voxel count must match it.
    """

    def __init__(self, path: str | os.PathLike[str], geometry: Geometry | None = None) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ShowerFileError(f"{self.path} is a directory; give a CaloChallenge HDF5 file")
        if not self.path.exists():
            raise ShowerFileError(f"{self.path}: no such file")
        if not self.path.is_file():
            raise ShowerFileError(f"{self.path} is not a regular file (device, FIFO or socket); give a CaloChallenge HDF5 file")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise ShowerFileError(f"{self.path}: not a readable HDF5 file (truncated or corrupt?): {exc}") from None
        try:
            self._energies, self._showers = self._check_structure(geometry)
        except BaseException:
            self._h5.close()
            raise

    def _check_structure(self, geometry: Geometry | None) -> tuple[h5py.Dataset, h5py.Dataset]:
        missing = [k for k in (ENERGY_KEY, SHOWER_KEY) if k not in self._h5]
        if missing:
            raise ShowerFileError(f"{self.path}: missing dataset(s) {missing}; found {sorted(self._h5.keys())}")
        energies, showers = self._h5[ENERGY_KEY], self._h5[SHOWER_KEY]
        for key, ds in ((ENERGY_KEY, energies), (SHOWER_KEY, showers)):
            if not isinstance(ds, h5py.Dataset):
                raise ShowerFileError(f"{self.path}: {key} is a group, expected a dataset")
            if ds.dtype.kind not in "fiu":
                raise ShowerFileError(f"{self.path}: {key} has dtype {ds.dtype}; expected floating point")
        if energies.ndim == 2 and energies.shape[1] != 1 or energies.ndim not in (1, 2):
            raise ShowerFileError(f"{self.path}: {ENERGY_KEY} has shape {energies.shape}; expected (N, 1) or (N,)")
        if showers.ndim != 2:
            raise ShowerFileError(f"{self.path}: {SHOWER_KEY} has shape {showers.shape}; expected (N, voxels)")
        if energies.shape[0] != showers.shape[0]:
            raise ShowerFileError(
                f"{self.path}: {energies.shape[0]} incident energies but {showers.shape[0]} showers"
            )
        if geometry is not None and showers.shape[1] != geometry.n_voxels:
            raise ShowerFileError(
                f"{self.path}: showers have {showers.shape[1]} voxels but geometry {geometry.name!r} has "
                f"{geometry.n_voxels}; pick the matching --geometry"
            )
        self._directions = self._check_directions()
        return energies, showers

    def _check_directions(self) -> h5py.Dataset | None:
        if DIRECTION_KEY not in self._h5:
            return None
        ds = self._h5[DIRECTION_KEY]
        if not isinstance(ds, h5py.Dataset) or ds.dtype.kind != "f" or ds.shape != (self._h5[SHOWER_KEY].shape[0], 2):
            raise ShowerFileError(
                f"{self.path}: {DIRECTION_KEY} must be a float dataset of shape (N, 2) = (theta, phi) per shower, "
                f"got {getattr(ds, 'shape', 'a group')}"
            )
        return ds

    # --- properties ---------------------------------------------------------------------------
    @property
    def n_showers(self) -> int:
        """Number of showers N."""
        return int(self._showers.shape[0])

    @property
    def n_voxels(self) -> int:
        """Number of voxels per shower."""
        return int(self._showers.shape[1])

    @property
    def has_directions(self) -> bool:
        """True when the file carries ``incident_directions``."""
        return self._directions is not None

    @property
    def attrs(self) -> dict[str, Any]:
        """File-level HDF5 attributes."""
        return dict(self._h5.attrs)

    # --- reading ------------------------------------------------------------------------------
    def read(self, start: int = 0, stop: int | None = None) -> ShowerData:
        """Rows ``[start, stop)`` as float32 arrays, values validated."""
        stop = self.n_showers if stop is None else min(stop, self.n_showers)
        try:
            energies = np.asarray(self._energies[start:stop], dtype=np.float32).reshape(-1, 1)
            showers = np.asarray(self._showers[start:stop], dtype=np.float32)
        except OSError as exc:
            raise ShowerFileError(f"{self.path}: rows {start}-{stop} cannot be read (truncated or corrupt?): {exc}") from None
        _check_values(self.path, start, energies, showers)
        return ShowerData(energies, showers, self._read_directions(start, stop))

    def _read_directions(self, start: int, stop: int) -> np.ndarray | None:
        if self._directions is None:
            return None
        try:
            directions = np.asarray(self._directions[start:stop], dtype=np.float32)
        except OSError as exc:
            raise ShowerFileError(f"{self.path}: {DIRECTION_KEY} rows {start}-{stop} cannot be read: {exc}") from None
        check_directions(self.path, start, directions)
        return directions

    def read_energies(self) -> np.ndarray:
        """All incident energies, ``(N, 1)`` float32, validated."""
        try:
            energies = np.asarray(self._energies[:], dtype=np.float32).reshape(-1, 1)
        except OSError as exc:
            raise ShowerFileError(f"{self.path}: incident energies cannot be read: {exc}") from None
        _check_values(self.path, 0, energies, np.zeros((0, 0), np.float32))
        return energies

    def iter_chunks(self, chunk_size: int = DEFAULT_CHUNK) -> Iterator[ShowerData]:
        """Yield consecutive validated chunks of at most ``chunk_size`` showers."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        for start in range(0, self.n_showers, chunk_size):
            yield self.read(start, start + chunk_size)

    def close(self) -> None:
        """Close the underlying HDF5 file."""
        self._h5.close()

    def __enter__(self) -> ShowerFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_showers(path: str | os.PathLike[str], geometry: Geometry | None = None) -> ShowerData:
    """Read and validate a whole shower file into memory."""
    with ShowerFile(path, geometry) as f:
        return f.read()


class ShowerWriter:
    """Append showers to a new CaloChallenge file that appears at ``path`` only when complete.

    Data go to a hidden temporary file in the same directory (:func:`calogen.outputs.atomic_path`),
    renamed onto ``path`` by a successful :meth:`close` (or a clean ``with`` exit); an exception or
    interruption removes it. HDF5 writes through a :class:`~calogen.outputs.GuardedFile`, so a full disk
    raises :class:`~calogen.outputs.OutputPathError` from :meth:`append` or :meth:`close` instead of
    crashing libhdf5.

    Args:
        path: destination file.
        n_voxels: voxels per shower (or a geometry of either kind).
        attrs: file attributes to store (e.g. geometry name, seed, command).
        compression: HDF5 filter, gzip by default.
        directions: store ``incident_directions`` (then every :meth:`append` passes them).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        n_voxels: int | Geometry | CellGeometry,
        *,
        attrs: dict[str, Any] | None = None,
        compression: str | None = "gzip",
        chunk_rows: int = 256,
        directions: bool = False,
    ) -> None:
        self.path = Path(path)
        self.n_voxels = int(getattr(n_voxels, "n_voxels", n_voxels))  # a Geometry, a CellGeometry or a count
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self.closed = False
        self._file: GuardedFile | None = None
        self._h5: h5py.File | None = None
        try:
            self._file = GuardedFile(tmp)
            self._h5 = h5py.File(self._file, "w")
            rows = max(1, min(chunk_rows, (4 << 20) // (4 * self.n_voxels)))
            self._energies = self._h5.create_dataset(
                ENERGY_KEY, shape=(0, 1), maxshape=(None, 1), dtype="f4", chunks=(max(rows, 1024), 1), compression=compression
            )
            self._showers = self._h5.create_dataset(
                SHOWER_KEY,
                shape=(0, self.n_voxels),
                maxshape=(None, self.n_voxels),
                dtype="f4",
                chunks=(rows, self.n_voxels),
                compression=compression,
                shuffle=compression is not None,
            )
            self._directions = (
                self._h5.create_dataset(DIRECTION_KEY, shape=(0, 2), maxshape=(None, 2), dtype="f4", chunks=(1024, 2))
                if directions
                else None
            )
            for key, value in (attrs or {}).items():
                self._h5.attrs[key] = value
            self._check_failure()
        except BaseException as exc:
            self._abort(exc)
            raise
        self.n_written = 0

    def append(self, energies: np.ndarray, showers: np.ndarray, directions: np.ndarray | None = None) -> None:
        """Append ``(n, 1)`` (or ``(n,)``) energies, ``(n, voxels)`` showers and, if the file has them, ``(n, 2)`` directions."""
        energies = np.asarray(energies, dtype=np.float32).reshape(-1, 1)
        showers = np.asarray(showers, dtype=np.float32)
        if showers.ndim != 2 or showers.shape[1] != self.n_voxels or showers.shape[0] != energies.shape[0]:
            raise ShowerFileError(
                f"cannot append {energies.shape[0]} energies and showers of shape {showers.shape} to a "
                f"file of {self.n_voxels} voxels"
            )
        n0, n1 = self.n_written, self.n_written + energies.shape[0]
        self._append_directions(directions, n0, n1)
        self._energies.resize(n1, axis=0)
        self._showers.resize(n1, axis=0)
        self._energies[n0:n1] = energies
        self._showers[n0:n1] = showers
        self._check_failure()
        self.n_written = n1

    def _append_directions(self, directions: np.ndarray | None, n0: int, n1: int) -> None:
        if (directions is None) != (self._directions is None):
            raise ShowerFileError(
                f"{self.path}: directions {'missing' if directions is None else 'given'} for a file "
                f"{'with' if directions is None else 'without'} {DIRECTION_KEY}"
            )
        if directions is None or self._directions is None:
            return
        directions = np.asarray(directions, dtype=np.float32)
        if directions.shape != (n1 - n0, 2):
            raise ShowerFileError(f"cannot append directions of shape {directions.shape}; expected ({n1 - n0}, 2)")
        check_directions(self.path, n0, directions)
        self._directions.resize(n1, axis=0)
        self._directions[n0:n1] = directions

    def _check_failure(self) -> None:
        """Raise the guarded file's write failure, if any, as an :class:`OutputPathError`."""
        error = self._file.error(self.path) if self._file is not None else None
        if error is not None:
            raise error

    def close(self) -> None:
        """Finish the file and move it into place (raises :class:`OutputPathError` if a write failed)."""
        try:
            assert self._h5 is not None and self._file is not None
            self._h5.close()
            self._file.close()
            self._check_failure()
        except BaseException as exc:
            self._abort(exc)
            raise
        self.closed = True
        self._atomic.__exit__(None, None, None)

    def _abort(self, exc: BaseException) -> None:
        """Close HDF5 (it cannot fail on a guarded file), then delete the temporary."""
        self.closed = True
        if self._h5 is not None:
            with contextlib.suppress(Exception):
                self._h5.close()
        if self._file is not None:
            self._file.close()
        self._atomic.__exit__(type(exc), exc, exc.__traceback__)

    def __enter__(self) -> ShowerWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.close()
        else:
            self._abort(exc)


def write_showers(
    path: str | os.PathLike[str],
    energies: np.ndarray,
    showers: np.ndarray,
    *,
    attrs: dict[str, Any] | None = None,
    directions: np.ndarray | None = None,
) -> None:
    """Write a whole shower file atomically (with ``incident_directions`` when ``directions`` is given)."""
    showers = np.asarray(showers)
    with ShowerWriter(path, showers.shape[1], attrs=attrs, directions=directions is not None) as writer:
        writer.append(energies, showers, directions)


def file_sha256(path: str | os.PathLike[str], block: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()
