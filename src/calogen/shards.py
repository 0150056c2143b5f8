"""Shards of a run: a complete CaloChallenge file plus its place in the run, and merging them back.

Shard ``i`` of ``k`` of an ``n``-shower run holds rows ``[i * n // k, (i + 1) * n // k)`` of the file the
unsharded run writes, with the same bytes: every shower's randomness is tied to its row in the run,
never to the shard. A shard carries a manifest (:class:`Manifest`, the JSON attribute
``calogen_shard``): the command and run parameters, their SHA-256 (the *run hash*), seed, geometry,
total count, shard index/count, row range and the SHA-256 of each shower dataset's bytes.

:func:`merge_shards` concatenates shards in row order into one file after checking that they belong to
one run (same run hash, count and geometry), tile ``[0, n)`` without gaps or overlaps and still hold the
bytes their manifests hash; anything else is a :class:`ShardError` that names the file and the fix.

Example:
    >>> shard_rows(10, 2, 3)
    (6, 10)
    >>> merge_shards(["run-0.h5", "run-1.h5", "run-2.h5"], "run.h5")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from calogen.errors import CalogenError
from calogen.io import ENERGY_KEY, SHOWER_KEY, ShowerFile, ShowerFileError, ShowerWriter

__all__ = [
    "ContentHash",
    "Manifest",
    "ShardError",
    "calogen_version",
    "check_tiling",
    "expand_paths",
    "in_row_order",
    "merge_shards",
    "read_manifest",
    "run_sha256",
    "shard_directory",
    "shard_rows",
    "virtual_file",
    "write_manifest",
]

MANIFEST_ATTR = "calogen_shard"
MANIFEST_FORMAT = "calogen-shard/1"


class ShardError(CalogenError):
    """Shards cannot be written or merged: bad index/count, foreign, missing, overlapping or corrupt shards."""


def shard_rows(n: int, index: int, count: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of shard ``index`` of ``count`` in an ``n``-shower run (sizes differ by at most 1)."""
    if not 1 <= count <= n:
        raise ShardError(f"the number of shards must lie in 1..{n} (the number of showers), got {count}")
    if not 0 <= index < count:
        raise ShardError(f"the shard index must lie in 0..{count - 1} for {count} shards, got {index}")
    return index * n // count, (index + 1) * n // count


def calogen_version() -> str:
    """The installed calogen version (part of a run's identity), or ``unknown``."""
    import importlib.metadata

    try:
        return importlib.metadata.version("calogen")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def run_sha256(run: dict[str, Any]) -> str:
    """SHA-256 of the run parameters as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(run, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ContentHash:
    """SHA-256 of the float32 bytes of ``incident_energies`` ``(N, 1)`` and of ``showers``, updated chunk by chunk."""

    def __init__(self) -> None:
        self._digests = {ENERGY_KEY: hashlib.sha256(), SHOWER_KEY: hashlib.sha256()}

    def update(self, energies: np.ndarray, showers: np.ndarray) -> None:
        """Add the next rows (converted to C-ordered float32, as stored)."""
        for key, values in ((ENERGY_KEY, energies), (SHOWER_KEY, showers)):
            self._digests[key].update(np.ascontiguousarray(values, dtype=np.float32).tobytes())

    def hexdigests(self) -> dict[str, str]:
        """Dataset name -> hex digest of the rows added so far."""
        return {key: digest.hexdigest() for key, digest in self._digests.items()}


@dataclass(frozen=True)
class Manifest:
    """A shard's place in its run (stored as JSON in the HDF5 attribute ``calogen_shard``).

    Attributes:
        command: ``simulate`` or ``generate``.
        run: the run's parameters (JSON values); equal runs give equal bytes.
        run_sha256: :func:`run_sha256` of ``run``.
        seed: the run seed.
        geometry: geometry name.
        total: showers in the whole run.
        index, count: this shard's index and the number of shards it was cut into.
        start, stop: the rows ``[start, stop)`` of the run this shard holds.
        content_sha256: dataset name -> SHA-256 of its float32 bytes (:class:`ContentHash`).
    """

    command: str
    run: dict[str, Any]
    run_sha256: str
    seed: int
    geometry: str
    total: int
    index: int
    count: int
    start: int
    stop: int
    content_sha256: dict[str, str] = field(default_factory=dict)
    format: str = MANIFEST_FORMAT

    @classmethod
    def for_shard(cls, command: str, run: dict[str, Any], *, seed: int, geometry: str, total: int, index: int, count: int) -> Manifest:
        """The manifest of shard ``index`` of ``count`` (content hashes still empty)."""
        start, stop = shard_rows(total, index, count)
        return cls(command, run, run_sha256(run), int(seed), geometry, total, index, count, start, stop)

    def to_json(self) -> str:
        """Compact, key-sorted JSON."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse :meth:`to_json` output; unknown or missing keys and a foreign format are errors (ValueError)."""
        data = json.loads(text)
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            raise ValueError(f"keys {sorted(data) if isinstance(data, dict) else type(data).__name__}, expected {sorted(names)}")
        if data["format"] != MANIFEST_FORMAT:
            raise ValueError(f"format {data['format']!r}, expected {MANIFEST_FORMAT!r}")
        return cls(**data)


@contextlib.contextmanager
def shard_directory(output: str | os.PathLike[str]) -> Iterator[Path]:
    """A new hidden directory beside ``output`` for the shard files of one run, removed afterwards."""
    output = Path(output)
    try:
        work = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".shards"))
    except OSError as exc:
        raise ShardError(f"cannot create a shard directory beside {output}: {exc.strerror}; choose a writable output path") from None
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_manifest(path: str | os.PathLike[str], manifest: Manifest) -> None:
    """Store ``manifest`` in the (not yet published) HDF5 file ``path``."""
    with h5py.File(path, "r+") as h5:
        h5.attrs[MANIFEST_ATTR] = manifest.to_json()


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of shard file ``path``; :class:`ShardError` if it has none or it cannot be read."""
    with ShowerFile(path) as f:
        text = f.attrs.get(MANIFEST_ATTR)
    if text is None:
        raise ShardError(f"{path} is not a shard (no {MANIFEST_ATTR} manifest); give files written with --shard-index I --num-shards N")
    try:
        return Manifest.from_json(text.decode() if isinstance(text, bytes) else str(text))
    except (ValueError, TypeError) as exc:
        raise ShardError(f"{path}: its shard manifest cannot be read ({exc}); write the shard again") from None


def expand_paths(items: Sequence[str]) -> list[Path]:
    """Paths from file names, comma-separated lists and glob patterns (``run-*.h5``), in the order given."""
    import glob

    paths: list[Path] = []
    for item in items:
        for part in filter(None, item.split(",")):
            matches = sorted(glob.glob(part)) if glob.has_magic(part) else [part]
            if not matches:
                raise ShardError(f"{part}: no file matches this pattern")
            paths.extend(Path(m) for m in matches)
    return paths


def check_tiling(shards: Sequence[tuple[Path, Manifest]]) -> list[tuple[Path, Manifest]]:
    """``shards`` sorted by row, checked to be one run that they cover exactly once; else :class:`ShardError`."""
    if not shards:
        raise ShardError("no shards given")
    seen: dict[Path, Path] = {}
    for path, _ in shards:
        if (key := path.resolve()) in seen:
            raise ShardError(f"{path} is given twice (as {seen[key]} and {path}); pass each shard once")
        seen[key] = path
    first_path, first = shards[0]
    for path, m in shards[1:]:
        for what, mine, theirs in (("run", m.run_sha256, first.run_sha256), ("shower count", m.total, first.total),
                                   ("geometry", m.geometry, first.geometry)):  # fmt: skip
            if mine != theirs:
                raise ShardError(
                    f"{path} belongs to another run than {first_path} ({what} {mine!s:.16} vs {theirs!s:.16}); "
                    "merge only shards of one run"
                )
    ordered = sorted(shards, key=lambda s: (s[1].start, s[1].stop))
    row = 0
    for (path, m), previous in zip(ordered, [None, *ordered[:-1]], strict=True):
        if m.start > row:
            raise ShardError(_missing(row, m.start, first))
        if m.start < row:
            assert previous is not None
            raise ShardError(
                f"{path} (rows [{m.start}, {m.stop})) overlaps {previous[0]} (rows [{previous[1].start}, {previous[1].stop})); "
                "pass each shard once"
            )
        row = m.stop
    if row != first.total:
        raise ShardError(_missing(row, first.total, first))
    return ordered


def _missing(start: int, stop: int, manifest: Manifest) -> str:
    """The error for rows ``[start, stop)`` that no shard holds, naming the shards of ``manifest.count`` that do."""
    rows = [shard_rows(manifest.total, i, manifest.count) for i in range(manifest.count)]
    indices = [i for i, (a, b) in enumerate(rows) if max(start, a) < min(stop, b)]
    return (
        f"rows [{start}, {stop}) of the {manifest.total}-shower run are missing (no shard holds them); "
        f"add shard {', '.join(map(str, indices))} of {manifest.count}"
    )


def _checked_rows(path: Path, manifest: Manifest, chunk_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The rows of one shard, chunk by chunk; the hash of all of them is checked against the manifest at the end."""
    digest = ContentHash()
    with ShowerFile(path) as f:
        if f.n_showers != manifest.stop - manifest.start:
            raise ShardError(f"{path} holds {f.n_showers} showers but its manifest says rows [{manifest.start}, {manifest.stop}); write the shard again")
        for chunk in f.iter_chunks(chunk_size):
            digest.update(chunk.energies, chunk.showers)
            yield chunk.energies, chunk.showers
    if digest.hexdigests() != manifest.content_sha256:
        raise ShardError(f"{path}: its showers do not match the hash in its manifest (corrupt or modified); write shard {manifest.index} again")


def read_shards(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[Path, Manifest]]:
    """The shards' manifests, checked (:func:`check_tiling`) and sorted by row."""
    return check_tiling([(Path(p), read_manifest(p)) for p in paths])


def merge_shards(
    paths: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], *, chunk_size: int = 1000
) -> Path:
    """Concatenate the shards of one run, in row order, into ``output`` (written atomically).

    The merged file holds the run's attributes (the shards' own, without the manifest) and the same
    ``incident_energies`` and ``showers`` bytes as the unsharded run. Raises :class:`ShardError` for
    shards of different runs, gaps, overlaps or content that no longer matches its manifest.
    """
    shards = read_shards(paths)
    with ShowerFile(shards[0][0]) as f:
        attrs = {k: v for k, v in f.attrs.items() if k != MANIFEST_ATTR}
        n_voxels = f.n_voxels
    output = Path(output)
    if any(output.resolve() == p.resolve() for p, _ in shards):
        raise ShardError(f"{output} is one of the shards; write the merged file elsewhere")
    with ShowerWriter(output, n_voxels, attrs=attrs) as writer:
        for path, manifest in shards:
            try:
                for energies, showers in _checked_rows(path, manifest, chunk_size):
                    writer.append(energies, showers)
            except ShowerFileError as exc:
                raise ShardError(f"cannot merge {path}: {exc}") from None
    return output


def in_row_order(paths: Sequence[Path]) -> list[Path]:
    """``paths`` in row order if they are the shards of one run, or as given if none is a shard."""
    manifests = {}
    for path in paths:
        with ShowerFile(path) as f:
            if MANIFEST_ATTR in f.attrs:
                manifests[path] = read_manifest(path)
    if not manifests:
        return list(paths)
    if len(manifests) != len(paths):
        plain = next(p for p in paths if p not in manifests)
        raise ShardError(f"{plain} is not a shard but other files in the list are; give the shards of one run, or plain files only")
    return [p for p, _ in check_tiling([(p, manifests[p]) for p in paths])]


def virtual_file(paths: Sequence[Path], output: Path) -> Path:
    """Write ``output``, an HDF5 file whose datasets are virtual concatenations of ``paths`` (nothing is copied).

    Shards of one run are checked (:func:`check_tiling`, not their content hashes) and put in row order;
    plain files stay in the order given and must have the same number of voxels. The result reads like
    one shower file (:class:`calogen.io.ShowerFile`) as long as ``paths`` exist.
    """
    ordered = in_row_order(paths)
    shapes = []
    for path in ordered:
        with h5py.File(path, "r") as h5, ShowerFile(path):
            shapes.append({key: h5[key].shape for key in (ENERGY_KEY, SHOWER_KEY)})
    voxels = sorted({shape[SHOWER_KEY][1] for shape in shapes})
    if len(voxels) != 1:
        raise ShardError(f"the files {', '.join(map(str, ordered))} have different voxel counts {voxels}; give files of one geometry")
    total = sum(shape[SHOWER_KEY][0] for shape in shapes)
    with h5py.File(output, "w") as h5:
        for key, width in ((ENERGY_KEY, 1), (SHOWER_KEY, voxels[0])):
            layout = h5py.VirtualLayout(shape=(total, width), dtype="f4")
            row = 0
            for path, shape in zip(ordered, shapes, strict=True):
                size, source = shape[key][0], h5py.VirtualSource(str(path.resolve()), key, shape=shape[key])
                if len(shape[key]) == 1:  # energies stored as (N,)
                    layout[row : row + size, 0] = source
                else:
                    layout[row : row + size] = source
                row += size
            h5.create_virtual_dataset(key, layout)
    return output
