"""The Generator protocol: anything that turns incident energies into showers.

Built-in simulators and trained models are Generators, so evaluation, timing, serving and export treat
them alike. ``sample`` is reproducible: the same energies and seed give the same bytes, whatever the
batch size.

Example:
    >>> import numpy as np
    >>> from calogen.geometry import Geometry
    >>> class Flat:
    ...     geometry = Geometry.builtin("tiny")
    ...     def sample(self, energies, *, seed, batch_size=None):
    ...         e = np.asarray(energies, dtype=np.float32).reshape(-1, 1)
    ...         return np.repeat(e / self.geometry.n_voxels, self.geometry.n_voxels, axis=1)
    >>> isinstance(Flat(), Generator)
    True
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from calogen.errors import CalogenError
from calogen.geometry import Geometry

if TYPE_CHECKING:
    from calogen.executor import Executor
    from calogen.shards import Manifest

__all__ = ["GENERATE_CHUNK", "Generator", "GeneratorRecipe", "derive_seed", "generate_as_shards", "generate_to_file"]

_MASK64 = (1 << 64) - 1


@runtime_checkable
class Generator(Protocol):
    """Produces showers ``(N, geometry.n_voxels)`` float32 MeV for incident energies ``(N,)`` or ``(N, 1)`` MeV.

    A generator conditioned on the incident direction also accepts ``directions``: ``(theta, phi)`` in radians,
    one ``(2,)`` or one per shower ``(N, 2)`` (None: its default direction); one trained at a fixed direction
    accepts None and refuses other directions with a :class:`~calogen.errors.CalogenError`. Callers pass
    ``directions`` only when they have one, so generators without the keyword keep working.
    """

    geometry: Geometry

    def sample(self, energies: np.ndarray, *, seed: int, batch_size: int | None = None) -> np.ndarray:
        """Showers for ``energies``; identical for identical ``(energies, seed)``."""
        ...


def derive_seed(seed: int, index: int) -> int:
    """A 63-bit child seed from a run seed and an index (SplitMix64 finaliser), independent of work split."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(index) + 0x632BE59BD9B4E019) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


GENERATE_CHUNK = 256
"""Showers per ``sample`` call of :func:`generate_to_file`, the unit of its seeding: chunk ``k`` of a run
gets ``derive_seed(seed, k)``. Small, so a shard recomputes little beyond its rows."""


@runtime_checkable
class GeneratorRecipe(Protocol):
    """A picklable description of a Generator that a worker process builds for itself."""

    def build(self) -> Generator:
        """The Generator."""
        ...


def generate_to_file(
    generator: Generator,
    energies: np.ndarray,
    path: str | os.PathLike[str],
    *,
    seed: int,
    batch_size: int = 1000,
    chunk_size: int = GENERATE_CHUNK,
    attrs: dict[str, Any] | None = None,
    progress: bool = False,
    manifest: Manifest | None = None,
) -> None:
    """Sample showers for ``energies`` chunk by chunk and stream them into a CaloChallenge file.

    Chunk ``k`` (showers ``[k * chunk_size, (k + 1) * chunk_size)`` of the run) is sampled with seed
    ``derive_seed(seed, k)``, so the bytes depend on ``(energies, seed, chunk_size)`` only, never on
    ``batch_size``, workers or shards; the output appears at ``path`` only when complete. With
    ``manifest`` (a :class:`calogen.shards.Manifest`), ``energies`` are the whole run's and only rows
    ``[manifest.start, manifest.stop)`` are written (their chunks are sampled whole and cut), with the
    manifest. ``seed`` must lie in ``[0, 2**63)`` (larger values would wrap in :func:`derive_seed`).
    """
    from calogen.io import ShowerWriter
    from calogen.outputs import atomic_path
    from calogen.shards import ContentHash, write_manifest

    energies = np.asarray(energies, dtype=np.float32).reshape(-1)
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise CalogenError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    if energies.size == 0:
        raise CalogenError("no incident energies given; pass at least one")
    if batch_size < 1 or chunk_size < 1:
        raise CalogenError(f"batch_size and chunk_size must be >= 1, got {batch_size} and {chunk_size}")
    start, stop = (0, energies.size) if manifest is None else (manifest.start, manifest.stop)
    if manifest is not None and manifest.total != energies.size:
        raise CalogenError(f"the shard manifest describes a run of {manifest.total} showers, but {energies.size} energies were given")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=stop - start, unit="shower", desc="generate")
    content = ContentHash()
    with atomic_path(path) if manifest is not None else contextlib.nullcontext(path) as target:
        with ShowerWriter(target, generator.geometry, attrs=attrs) as writer:
            for k in range(start // chunk_size, -(-stop // chunk_size)):
                first = k * chunk_size
                chunk = energies[first : first + chunk_size]
                showers = generator.sample(chunk, seed=derive_seed(seed, k), batch_size=batch_size)
                rows = slice(max(start - first, 0), min(stop - first, chunk.size))
                writer.append(chunk[rows], showers[rows])
                content.update(chunk[rows].reshape(-1, 1), showers[rows])
                if bar is not None:
                    bar.update(rows.stop - rows.start)
        if manifest is not None:
            write_manifest(target, replace(manifest, content_sha256=content.hexdigests()))
    if bar is not None:
        bar.close()


def _shard_task(task: tuple[GeneratorRecipe, np.ndarray, Path, dict[str, Any]]) -> Path:
    """Build the Generator and write one shard (a worker's task): ``(recipe, energies, path, options)``."""
    recipe, energies, path, options = task
    generate_to_file(recipe.build(), energies, path, **options)
    return path


def generate_as_shards(
    recipe: GeneratorRecipe,
    energies: np.ndarray,
    path: str | os.PathLike[str],
    *,
    seed: int,
    run: dict[str, Any],
    executor: Executor,
    shards: int,
    retries: int = 2,
    batch_size: int = 1000,
    chunk_size: int = GENERATE_CHUNK,
    attrs: dict[str, Any] | None = None,
) -> Path:
    """:func:`generate_to_file` as ``shards`` tasks on ``executor``, each building its Generator from
    ``recipe`` and writing one shard file beside ``path``, merged into ``path``: the same bytes.

    ``run`` (JSON values, with the ``geometry`` name) identifies the run in the shards' manifests
    (:class:`calogen.shards.Manifest`).
    """
    from calogen.shards import Manifest, merge_shards, shard_directory

    energies = np.asarray(energies, dtype=np.float32).reshape(-1)
    geometry = str(run["geometry"])
    with shard_directory(path) as work:
        tasks = [
            (recipe, energies, work / f"shard-{i:06d}.h5", {
                "seed": seed, "batch_size": batch_size, "chunk_size": chunk_size, "attrs": attrs,
                "manifest": Manifest.for_shard("generate", run, seed=seed, geometry=geometry, total=energies.size, index=i, count=shards),
            })
            for i in range(shards)
        ]  # fmt: skip
        return merge_shards(list(executor.map(_shard_task, tasks, retries=retries)), path)
