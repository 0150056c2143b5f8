"""High-level features of a sample stored as shards: one task per shard on any executor, reduced exactly.

Per-shower features are concatenated in shard order, the voxel spectra merged (integer counts), and the
average shower is the float64 sum over shards divided by the total count — the serial result, bit for
bit, whenever the float64 sums are exact (they are for any realistic sample; a test checks equality).

Example:
    >>> from calogen.executor import SerialExecutor
    >>> features_from_shards([], None, executor=SerialExecutor())  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    calogen.features.FeatureError: no shards given
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from calogen.features import _PER_SHOWER, FeatureError, ShowerFeatures, accumulate_file
from calogen.voxel_spectrum import VoxelSpectrum

if TYPE_CHECKING:
    from calogen.executor import Executor
    from calogen.geometry import Geometry

__all__ = ["features_from_shards"]


def _shard_part(task: tuple[str, Geometry, float | None, int | None]) -> tuple[ShowerFeatures, np.ndarray]:
    """Features and float64 shower sum of one shard (a picklable, module-level task)."""
    path, geometry, threshold, chunk_size = task
    acc = accumulate_file(path, geometry, threshold=threshold, chunk_size=chunk_size)
    return acc.result(), np.array(acc.shower_sum)


def features_from_shards(
    paths: Sequence[str | os.PathLike[str]],
    geometry: Geometry,
    *,
    executor: Executor,
    threshold: float | None = None,
    chunk_size: int | None = None,
    retries: int = 0,
) -> ShowerFeatures:
    """The features of the shards ``paths`` taken in order as one sample, each shard one ``executor`` task."""
    if not paths:
        raise FeatureError("no shards given")
    tasks = [(os.fspath(p), geometry, threshold, chunk_size) for p in paths]
    parts = list(executor.map(_shard_part, tasks, retries=retries))
    features = [f for f, _ in parts]
    n = sum(f.n_showers for f in features)
    total = functools.reduce(np.add, (s for _, s in parts))
    arrays = {name: np.concatenate([getattr(f, name) for f in features], axis=0) for name in _PER_SHOWER}
    spectrum: VoxelSpectrum = functools.reduce(VoxelSpectrum.merge, (f.voxel_spectrum for f in features))
    return ShowerFeatures(
        **arrays, voxel_spectrum=spectrum, mean_shower=(total / n).astype(np.float32), n_showers=n,
        threshold=features[0].threshold, geometry=features[0].geometry,
    )  # fmt: skip
