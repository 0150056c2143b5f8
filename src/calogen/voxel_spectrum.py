"""The above-threshold voxel energies of a sample: exact values while small, a fine grid always.

:class:`VoxelSpectrum` is the voxel-energy spectrum of :class:`calogen.features.ShowerFeatures`. It keeps
every value only up to a budget (:data:`SPECTRUM_EXACT_VALUES`, 134M voxels) and counts on a fine grid
of float32 bit patterns always, so 100k DS3 showers stream in bounded memory while histograms on
edges chosen later (the official ones depend on the reference maximum) stay exact or within 3.1e-5
(relative) of an edge.

Example:
    >>> import numpy as np
    >>> s = VoxelSpectrum.from_values(np.array([0.5, 2.0, 3.0], np.float32))
    >>> s.histogram(np.array([0.0, 1.0, 4.0])).tolist(), s.exact
    ([1, 2], True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

__all__ = ["SPECTRUM_DROPPED_BITS", "SPECTRUM_EXACT_VALUES", "SpectrumCounter", "VoxelSpectrum"]

SPECTRUM_DROPPED_BITS = 8
"""Mantissa bits dropped by :class:`VoxelSpectrum` cells: 2^-15 (3.1e-5) wide in relative energy."""

SPECTRUM_EXACT_VALUES = 1 << 27
"""Voxel values a :class:`VoxelSpectrum` keeps exactly (512 MiB of float32); beyond, cells only."""


@dataclass(frozen=True)
class VoxelSpectrum:
    """The above-threshold voxel energies of a sample, exact while small, on a fine grid always.

    Up to :data:`SPECTRUM_EXACT_VALUES` values are kept as float32 chunks, so histograms on edges
    chosen later (the official ones depend on the reference maximum) are exact. Past that budget
    only the grid remains: positive float32 values are ordered like their bit patterns, so
    ``bits >> k`` sorts them into cells of relative width ``2^(k-23)``
    (``k =`` :data:`SPECTRUM_DROPPED_BITS`); a histogram is then exact except for values within 3.1e-5
    (relative) of an edge, counted in the bin of their cell's lowest value.

    Args:
        first_cell: cell index (``bits >> k``) of ``counts[0]``.
        counts: ``(cells,)`` int64 number of voxels per cell.
        max_value: largest voxel energy, MeV (float32; 0 when there is none).
        values: the values as float32 chunks, or None once past the budget.
    """

    first_cell: int
    counts: np.ndarray
    max_value: np.float32
    values: tuple[np.ndarray, ...] | None

    @property
    def n_values(self) -> int:
        """Number of voxels in the spectrum."""
        return int(self.counts.sum())

    @property
    def exact(self) -> bool:
        """Whether histograms are computed from the exact values."""
        return self.values is not None

    def cell_values(self) -> np.ndarray:
        """Lowest float32 value of every cell, ``(cells,)`` MeV."""
        return _cell_lows(self.first_cell, self.counts.size)

    def aligned(self, other: VoxelSpectrum) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(cell lowest values, counts of self, counts of other)`` on the cells both span."""
        first = min(self.first_cell, other.first_cell)
        stop = max(self.first_cell + self.counts.size, other.first_cell + other.counts.size)
        out = []
        for part in (self, other):
            counts = np.zeros(stop - first, np.int64)
            counts[part.first_cell - first : part.first_cell - first + part.counts.size] = part.counts
            out.append(counts)
        return _cell_lows(first, stop - first), out[0], out[1]

    def histogram(self, edges: np.ndarray) -> np.ndarray:
        """Counts per bin of increasing ``edges`` (``np.histogram`` rules: last bin closed)."""
        edges = np.asarray(edges, dtype=np.float64)
        if self.values is not None:
            counts = np.zeros(edges.size - 1, np.int64)
            bounds = _bit_bounds(edges)
            table = _bin_table(bounds)
            for chunk in self.values:
                _histogram_bits(chunk, bounds, table, counts)
            return counts
        nonzero = np.flatnonzero(self.counts)
        values = self.cell_values()[nonzero].astype(np.float64)
        index = np.searchsorted(edges, values, side="right") - 1
        index[values == edges[-1]] = edges.size - 2
        inside = (index >= 0) & (index < edges.size - 1)
        counts = np.bincount(index[inside], weights=self.counts[nonzero][inside], minlength=edges.size - 1)
        return counts.astype(np.int64)

    @staticmethod
    def from_values(values: np.ndarray) -> VoxelSpectrum:
        """Spectrum of positive float32 ``values``."""
        values = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        counter = SpectrumCounter()
        counter.add(values)
        return counter.result()

    def merge(self, other: VoxelSpectrum) -> VoxelSpectrum:
        """The spectrum of both sets of voxels."""
        if other.counts.size == 0:
            return self
        if self.counts.size == 0:
            return other
        _, mine, theirs = self.aligned(other)
        values = None
        small = self.n_values + other.n_values <= SPECTRUM_EXACT_VALUES
        if self.values is not None and other.values is not None and small:
            values = self.values + other.values
        first = min(self.first_cell, other.first_cell)
        return VoxelSpectrum(first, mine + theirs, max(self.max_value, other.max_value), values)


class SpectrumCounter:
    """Builds a :class:`VoxelSpectrum`: counts on every cell of positive float32 (2^23 cells, int64), values
    while within budget."""

    def __init__(self) -> None:
        self.counts = np.zeros(1 << (31 - SPECTRUM_DROPPED_BITS), np.int64)  # pages are touched only where used
        self.max_value = np.float32(0.0)
        self.values: list[np.ndarray] | None = []
        self.n_values = 0

    def add(self, values: np.ndarray) -> None:
        """Add positive float32 ``values`` (contiguous)."""
        if values.size == 0:
            return
        self.max_value = max(self.max_value, _count_cells(values, self.counts))
        self.n_values += values.size
        if self.values is not None:
            self.values = self.values + [values.copy()] if self.n_values <= SPECTRUM_EXACT_VALUES else None

    def result(self) -> VoxelSpectrum:
        used = np.flatnonzero(self.counts)
        first, stop = (int(used[0]), int(used[-1]) + 1) if used.size else (0, 0)
        values = None if self.values is None else tuple(self.values)
        return VoxelSpectrum(first, self.counts[first:stop].copy(), self.max_value, values)


@nb.njit(cache=True)
def _count_cells(values: np.ndarray, counts: np.ndarray) -> np.float32:  # pragma: no cover - compiled
    """``counts[bits(v) >> k] += 1`` for every positive float32 ``v`` in ``values``; returns the largest."""
    high = np.float32(0.0)
    bits = values.view(np.uint32)
    for i in range(values.size):
        counts[bits[i] >> SPECTRUM_DROPPED_BITS] += 1
        high = max(high, values[i])
    return high


_COARSE_SHIFT = 16
"""Bits dropped for the bin lookup table of :func:`_histogram_bits`: 2^15 entries, 2^-7 relative wide."""


@nb.njit(cache=True)
def _histogram_bits(
    values: np.ndarray, bounds: np.ndarray, table: np.ndarray, counts: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Add to ``counts[k]`` the positive float32 ``values`` with ``bounds[k] <= bits(v) < bounds[k + 1]``.

    ``table[bits >> 16]`` is the bin of the whole coarse cell, -1 outside the bounds, -2 when a bound
    cuts the cell (then the bounds are searched).
    """
    bits = values.view(np.uint32)
    for i in range(values.size):
        b = bits[i]
        k = table[b >> _COARSE_SHIFT]
        if k >= 0:
            counts[k] += 1
        elif k == -2 and bounds[0] <= b < bounds[-1]:
            counts[np.searchsorted(bounds, b, side="right") - 1] += 1


def _bin_table(bounds: np.ndarray) -> np.ndarray:
    """The coarse-cell lookup table of :func:`_histogram_bits` for bit ``bounds``."""
    starts = np.arange(1 << (31 - _COARSE_SHIFT), dtype=np.int64) << _COARSE_SHIFT
    first = np.searchsorted(bounds, starts, side="right") - 1
    last = np.searchsorted(bounds, starts + (1 << _COARSE_SHIFT) - 1, side="right") - 1
    table = np.where(first == last, first, -2)
    table[(table == bounds.size - 1)] = -1
    return table.astype(np.int32)


def _bit_bounds(edges: np.ndarray) -> np.ndarray:
    """Bit-pattern bounds of positive float32 values in each bin of float64 ``edges`` (last bin closed).

    Positive float32 values are ordered like their bit patterns, so ``v >= e`` is
    ``bits(v) >= bits(smallest float32 >= e)`` and ``v <= e`` is ``bits(v) < bits(largest float32 <= e) + 1``:
    binning the bit patterns is exactly ``np.histogram`` of the values.
    """
    bounds = np.zeros(edges.size, np.int64)
    for i, edge in enumerate(edges):
        if edge <= 0:
            continue
        f = np.float32(edge)
        last = i == edges.size - 1
        if not last and f < edge:
            f = np.nextafter(f, np.float32(np.inf))
        if last and f > edge:
            f = np.nextafter(f, np.float32(0.0))
        bounds[i] = int(f.view(np.uint32)) + (1 if last else 0)
    return np.maximum.accumulate(bounds).astype(np.uint32)


def _cell_lows(first: int, size: int) -> np.ndarray:
    """Lowest float32 value of cells ``first .. first + size - 1``."""
    cells = np.arange(first, first + size, dtype=np.uint64)
    return (cells << np.uint64(SPECTRUM_DROPPED_BITS)).astype(np.uint32).view(np.float32)
