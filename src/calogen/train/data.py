"""Shuffled, resumable mini-batches from a CaloChallenge HDF5 file read in blocks.

Rows are grouped in blocks of ``block_size`` consecutive showers. A seeded permutation assigns whole
blocks to validation and training. Each epoch permutes the training blocks, groups them by
``shuffle_blocks`` and shuffles rows within each group; batch ``j`` of the epoch is rows
``order[j B:(j + 1) B]``. The order is a pure function of ``(seed, epoch)``, so a run resumed at step
``s`` sees exactly the batches it would have seen, and only the blocks in use are held in memory.

A refiner's FastSim showers (:class:`SourcePool`) are held in memory whole and drawn by incident energy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from calogen.errors import CalogenError
from calogen.geometry import Geometry
from calogen.io import ShowerData, ShowerFile

__all__ = ["BlockLoader", "SourcePool", "check_fastsim_file"]

ENERGY_TOLERANCE = 1.05
"""How far (a factor) the FastSim energies' range may differ from the one they are paired with, at either end."""


class BlockLoader:
    """Training batches and a validation set from one shower file.

    Args:
        path: the HDF5 file.
        geometry: its readout (the voxel count is checked).
        batch_size: showers per batch.
        block_size: rows per block (reduced for small files so there are at least 10 blocks).
        shuffle_blocks: blocks shuffled together.
        val_fraction: share of blocks held out.
        seed: seed of split and order.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        geometry: Geometry,
        *,
        batch_size: int,
        block_size: int,
        shuffle_blocks: int,
        val_fraction: float,
        seed: int,
    ) -> None:
        self.file = ShowerFile(path, geometry)
        n = self.file.n_showers
        self.block_size = max(1, min(block_size, n // 10))
        n_blocks = -(-n // self.block_size)
        perm = np.random.default_rng([seed, 0]).permutation(n_blocks)
        n_val = max(1, round(val_fraction * n_blocks))
        self.val_blocks, self.train_blocks = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        self.batch_size, self.shuffle_blocks, self.seed = batch_size, shuffle_blocks, seed
        self.n_train = int(sum(self._block_rows(b).size for b in self.train_blocks))
        if self.n_train < batch_size:
            raise CalogenError(
                f"{path}: {self.n_train} training showers after the validation split, fewer than one batch of "
                f"{batch_size}; give more showers or a smaller train.batch_size"
            )
        self._cache: dict[int, ShowerData] = {}

    @property
    def batches_per_epoch(self) -> int:
        """Full batches per epoch (the remainder is dropped)."""
        return self.n_train // self.batch_size

    def _block_rows(self, block: int) -> np.ndarray:
        return np.arange(block * self.block_size, min((block + 1) * self.block_size, self.file.n_showers))

    def _read_block(self, block: int) -> ShowerData:
        rows = self._block_rows(block)
        return self.file.read(int(rows[0]), int(rows[-1]) + 1)

    def epoch_order(self, epoch: int) -> tuple[np.ndarray, dict[int, int]]:
        """Row indices of the training set in the order of ``epoch``, and each block's shuffle group."""
        rng = np.random.default_rng([self.seed, 1, epoch])
        blocks = rng.permutation(self.train_blocks)
        groups = [blocks[i : i + self.shuffle_blocks] for i in range(0, blocks.size, self.shuffle_blocks)]
        group_of = {int(b): gi for gi, g in enumerate(groups) for b in g}
        order = np.concatenate([rng.permutation(np.concatenate([self._block_rows(b) for b in g])) for g in groups])
        return order, group_of

    def batches(self, start_step: int = 0) -> Iterator[ShowerData]:
        """Endless batches beginning with global step ``start_step``."""
        per_epoch = self.batches_per_epoch
        epoch, j = divmod(start_step, per_epoch)
        while True:
            order, group_of = self.epoch_order(epoch)
            self._cache.clear()
            for k in range(j, per_epoch):
                yield self._gather(order[k * self.batch_size : (k + 1) * self.batch_size], group_of)
            epoch, j = epoch + 1, 0

    def _gather(self, rows: np.ndarray, group_of: dict[int, int]) -> ShowerData:
        blocks = rows // self.block_size
        needed = set(np.unique(blocks).tolist())
        first_group = min(group_of[b] for b in needed)
        for done in [b for b in self._cache if group_of[b] < first_group]:
            del self._cache[done]
        for b in needed - set(self._cache):
            self._cache[b] = self._read_block(b)
        energies = np.empty((rows.size, 1), dtype=np.float32)
        showers = np.empty((rows.size, self.file.n_voxels), dtype=np.float32)
        directions = np.empty((rows.size, 2), dtype=np.float32) if self.file.has_directions else None
        for b in needed:
            sel = blocks == b
            local = rows[sel] - b * self.block_size
            energies[sel] = self._cache[b].energies[local]
            showers[sel] = self._cache[b].showers[local]
            if directions is not None:
                directions[sel] = self._cache[b].directions[local]  # type: ignore[index]
        return ShowerData(energies, showers, directions)

    def read_blocks(self, blocks: np.ndarray, limit: int) -> ShowerData:
        """Concatenated rows of ``blocks`` (in order), at most ``limit`` showers."""
        parts, total = [], 0
        for b in blocks:
            if total >= limit:
                break
            data = self._read_block(int(b))
            parts.append(data)
            total += len(data)
        energies = np.concatenate([p.energies for p in parts])[:limit]
        showers = np.concatenate([p.showers for p in parts])[:limit]
        directions = np.concatenate([p.directions for p in parts])[:limit] if self.file.has_directions else None  # type: ignore[misc]
        return ShowerData(energies, showers, directions)

    def train_blocks_data(self) -> Iterator[ShowerData]:
        """The training blocks one at a time, in file order."""
        for b in self.train_blocks:
            yield self._read_block(int(b))

    def train_energies(self) -> np.ndarray:
        """Incident energies of all training showers, ``(n_train, 1)`` MeV."""
        energies = self.file.read_energies()
        return energies[np.concatenate([self._block_rows(b) for b in self.train_blocks])]

    def close(self) -> None:
        """Close the file."""
        self.file.close()


def check_fastsim_file(path: str | os.PathLike[str], geometry: Geometry, e_min: float, e_max: float, *, against: str) -> ShowerFile:
    """Open the FastSim file ``path`` and check it against ``geometry`` and the incident energies
    ``[e_min, e_max]`` MeV of ``against`` (what it is paired with, for the message); returns the open file.

    Raises:
        CalogenError: another geometry (voxel count or recorded name), or energies outside that range
            by more than :data:`ENERGY_TOLERANCE`.
    """
    f = ShowerFile(path)
    try:
        named = f.attrs.get("geometry")
        if f.n_voxels != geometry.n_voxels or (isinstance(named, str) and named != geometry.name):
            raise CalogenError(
                f"{path} holds showers of geometry {named if isinstance(named, str) else 'unknown'!r} ({f.n_voxels} voxels), "
                f"but {against} is {geometry.name!r} ({geometry.n_voxels} voxels); simulate the FastSim with --geometry {geometry.name}"
            )
        energies = f.read_energies()
        lo, hi = float(energies.min()), float(energies.max())
        if lo < e_min / ENERGY_TOLERANCE or hi > e_max * ENERGY_TOLERANCE:
            raise CalogenError(
                f"{path} has incident energies {lo:.4g}-{hi:.4g} MeV, outside the {e_min:.4g}-{e_max:.4g} MeV of {against}; "
                "simulate the FastSim over the same energy range"
            )
    except BaseException:
        f.close()
        raise
    return f


class SourcePool:
    """A refiner's FastSim showers, held in memory and drawn by incident energy.

    The showers, sorted by incident energy, are split into ``bins`` bins of equal count; a full-simulation
    shower of energy ``E`` is paired with showers drawn uniformly from the bin that ``E`` falls in (the
    first or last bin beyond the ends). The two files must cover the same energies (within
    :data:`ENERGY_TOLERANCE` at both ends).

    Args:
        path: the FastSim HDF5 file.
        geometry: its readout (checked).
        target_energies: incident energies ``(N,)`` or ``(N, 1)`` MeV of the showers it is paired with.
        bins: number of energy bins.
    """

    def __init__(self, path: str | os.PathLike[str], geometry: Geometry, target_energies: np.ndarray, *, bins: int) -> None:
        target = np.asarray(target_energies, dtype=np.float64).reshape(-1)
        with check_fastsim_file(path, geometry, float(target.min()), float(target.max()), against="the --data file") as f:
            data, self.attrs = f.read(), f.attrs
        lo, hi = float(data.energies.min()), float(data.energies.max())
        if lo > target.min() * ENERGY_TOLERANCE or hi < target.max() / ENERGY_TOLERANCE:
            raise CalogenError(
                f"{path} has incident energies {lo:.4g}-{hi:.4g} MeV and does not cover the {target.min():.4g}-{target.max():.4g} MeV "
                "of the --data file; simulate the FastSim over the same energy range"
            )
        self.showers, self.energies = data.showers, data.energies
        self.order = np.argsort(data.energies[:, 0], kind="stable")
        n = self.order.size
        self.starts = np.linspace(0, n, min(bins, n) + 1).round().astype(np.int64)
        self.log_edges = np.log(data.energies[self.order[self.starts[1:-1]], 0].astype(np.float64))

    def bin_of(self, energies: np.ndarray) -> np.ndarray:
        """The bin index ``(B,)`` of incident energies ``(B,)`` MeV."""
        return np.searchsorted(self.log_edges, np.log(np.asarray(energies, dtype=np.float64).reshape(-1)), side="right")

    def draw(self, energies: np.ndarray, rng: np.random.Generator, per_target: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``(B, per_target)`` of FastSim showers drawn from the bins of ``energies (B,)`` MeV, and those bins ``(B,)``."""
        bins = self.bin_of(energies)
        lo, hi = self.starts[bins], self.starts[bins + 1]
        pick = lo[:, None] + np.floor(rng.random((bins.size, per_target)) * (hi - lo)[:, None]).astype(np.int64)
        return self.order[np.minimum(pick, hi[:, None] - 1)], bins

    def record(self) -> dict[str, Any]:
        """Size and energy range of the pool (for the model's provenance)."""
        return {"n_showers": int(self.order.size), "bins": int(self.starts.size - 1),
                "energy_range_mev": [float(self.energies.min()), float(self.energies.max())],
                "mean_bin_width_ln_e": float(math.log(self.energies.max() / self.energies.min()) / max(1, self.starts.size - 1))}  # fmt: skip
