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

import os
from typing import Any, Protocol, runtime_checkable

import numpy as np

from calogen.errors import CalogenError
from calogen.geometry import Geometry

__all__ = ["Generator", "derive_seed", "generate_to_file"]

_MASK64 = (1 << 64) - 1


@runtime_checkable
class Generator(Protocol):
    """Produces showers ``(N, geometry.n_voxels)`` float32 MeV for incident energies ``(N,)`` or ``(N, 1)`` MeV."""

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


def generate_to_file(
    generator: Generator,
    energies: np.ndarray,
    path: str | os.PathLike[str],
    *,
    seed: int,
    batch_size: int = 1000,
    chunk_size: int = 10_000,
    attrs: dict[str, Any] | None = None,
    progress: bool = False,
) -> None:
    """Sample showers for ``energies`` chunk by chunk and stream them into a CaloChallenge file.

    Chunk ``k`` is sampled with seed ``derive_seed(seed, k)``, so a file is reproducible for a given
    ``chunk_size`` and the output appears at ``path`` only when complete. ``seed`` must lie in
    ``[0, 2**63)`` (larger values would wrap in :func:`derive_seed`).
    """
    from calogen.io import ShowerWriter

    energies = np.asarray(energies, dtype=np.float32).reshape(-1)
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise CalogenError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    if energies.size == 0:
        raise CalogenError("no incident energies given; pass at least one")
    if batch_size < 1 or chunk_size < 1:
        raise CalogenError(f"batch_size and chunk_size must be >= 1, got {batch_size} and {chunk_size}")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=energies.size, unit="shower", desc="generate")
    with ShowerWriter(path, generator.geometry, attrs=attrs) as writer:
        for k, start in enumerate(range(0, energies.size, chunk_size)):
            chunk = energies[start : start + chunk_size]
            showers = generator.sample(chunk, seed=derive_seed(seed, k), batch_size=batch_size)
            writer.append(chunk, showers)
            if bar is not None:
                bar.update(chunk.size)
    if bar is not None:
        bar.close()
