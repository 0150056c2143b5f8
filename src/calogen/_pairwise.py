"""Compiled one-pass shower sums in numpy's pairwise summation order (used by :mod:`calogen.features`).

numpy reduces a contiguous axis by pairwise summation: a run of at most 128 values is a leaf summed
with 8 partial sums (lane ``k`` takes values ``k, k + 8, ...``; then
``((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))``, then the ``n mod 8`` tail in order; fewer than 8
values are summed in order), and a longer run is split into two halves (the first a multiple of 8
long) whose sums are added. :func:`chunk_sums` replays that order, so per-layer sums equal
``data[:, a:b].sum(-1)`` and ``(c * data[:, a:b]).sum(-1)`` of the thresholded float32 data bit for
bit. Voxels below the threshold are zero, and adding an exact zero never changes a partial sum, so
only the non-zero voxels of a shower are visited: one compiled pass per chunk, no float temporaries.
The split tree of every voxel range is precomputed as a post-order program (:func:`pairwise_program`).
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["ADD", "BLOCK", "chunk_sums", "pairwise_program"]

BLOCK = 128
"""Longest run numpy sums as one leaf."""

ADD = -1
"""Program op: pop two partial sums, push their sum (other ops push the sum of that leaf)."""


def pairwise_program(n: int) -> tuple[list[int], list[int], list[int]]:
    """Leaves ``(starts, lengths)`` of numpy's pairwise tree over ``n`` values and its post-order program.

    The program lists leaf indices (push that leaf's sum) and :data:`ADD`.
    """
    starts: list[int] = []
    lengths: list[int] = []
    program: list[int] = []

    def visit(start: int, length: int) -> None:
        if length <= BLOCK:
            program.append(len(starts))
            starts.append(start)
            lengths.append(length)
            return
        half = length // 2 - (length // 2) % 8
        visit(start, half)
        visit(start + half, length - half)
        program.append(ADD)

    visit(0, n)
    return starts, lengths, program


@nb.njit(cache=True)
def chunk_sums(
    data: np.ndarray, first_row: int, threshold: np.float32, seg_start: np.ndarray, seg_size: np.ndarray,
    seg_weights: np.ndarray, weights: np.ndarray, leaf_start: np.ndarray, leaf_len: np.ndarray, leaf_ptr: np.ndarray,
    program: np.ndarray, program_ptr: np.ndarray, energy: np.ndarray, moments: np.ndarray, nonzero: np.ndarray,
    voxel_sum: np.ndarray, values: np.ndarray,
) -> tuple[int, int, int]:  # pragma: no cover - compiled
    """Threshold rows ``first_row..`` of ``data`` and fill their sums; stop when ``values`` could overflow.

    A voxel counts when ``x >= threshold`` and ``x > 0`` (float32 comparisons, as numpy with a Python
    float threshold). Segment ``g`` covers voxels ``seg_start[g] : seg_start[g] + seg_size[g]``; its
    pairwise program is ``program[program_ptr[g]:program_ptr[g + 1]]`` over leaves
    ``leaf_ptr[g]:leaf_ptr[g + 1]``.

    Args:
        data: ``(n, V)`` float32 showers, MeV, as stored (not thresholded).
        first_row: first row to process.
        threshold: float32 per-voxel threshold, MeV.
        seg_*, leaf_*, program*: the segments and their pairwise programs (see above).
        weights: ``(W, V)`` float64 per-voxel weights; segment ``g`` uses the first ``seg_weights[g]``.
        energy: ``(n, S)`` float32 output, ``sum_v x_v`` per segment.
        moments: ``(n, S, W)`` float64 output, ``sum_v weights[w, v] * x_v``.
        nonzero: ``(n, S)`` int64 output, voxels above threshold.
        voxel_sum: ``(V,)`` float64, the thresholded voxels are added to it.
        values: ``(capacity >= V,)`` float32 buffer receiving the above-threshold voxel values.

    Returns:
        ``(next row, values written, NaN voxels seen)``.
    """
    n, n_vox = data.shape
    n_w = weights.shape[0]
    index = np.empty(n_vox, np.int64)
    value = np.empty(n_vox, np.float32)
    lanes32 = np.zeros(8, np.float32)
    lanes64 = np.zeros((8, n_w), np.float64)
    leaf64 = np.zeros(n_w, np.float64)
    stack32 = np.zeros(64, np.float32)
    stack64 = np.zeros((64, n_w), np.float64)
    written, n_nan = 0, 0
    row_index = first_row
    while row_index < n and written + n_vox <= values.size:
        row = data[row_index]
        m = 0
        for v in range(n_vox):
            x = row[v]
            if x >= threshold and x > 0:
                index[m] = v
                value[m] = x
                m += 1
                voxel_sum[v] += x
                values[written] = x
                written += 1
            elif x != x:
                n_nan += 1
        for g in range(seg_start.size):
            base, n_wg, first_leaf = seg_start[g], seg_weights[g], leaf_ptr[g]
            lo = np.searchsorted(index[:m], base)
            hi = np.searchsorted(index[:m], base + seg_size[g])
            nonzero[row_index, g] = hi - lo
            if hi == lo:  # every sum of an all-zero range is exactly 0
                continue
            q, top = lo, 0
            for k in range(program_ptr[g], program_ptr[g + 1]):
                op = program[k]
                if op == ADD:
                    top -= 1
                    stack32[top - 1] = stack32[top - 1] + stack32[top]
                    for w in range(n_wg):
                        stack64[top - 1, w] = stack64[top - 1, w] + stack64[top, w]
                    continue
                leaf = first_leaf + op
                start = base + leaf_start[leaf]
                stop = start + leaf_len[leaf]
                leaf32 = np.float32(0.0)
                for w in range(n_wg):
                    leaf64[w] = 0.0
                if leaf_len[leaf] >= 8 and q < hi and index[q] < stop:
                    lanes32[:] = 0.0
                    lanes64[:, :n_wg] = 0.0
                    main_stop = stop - leaf_len[leaf] % 8
                    while q < hi and index[q] < main_stop:
                        lane, x = (index[q] - start) & 7, value[q]
                        lanes32[lane] += x
                        for w in range(n_wg):
                            lanes64[lane, w] += weights[w, index[q]] * np.float64(x)
                        q += 1
                    leaf32 = ((lanes32[0] + lanes32[1]) + (lanes32[2] + lanes32[3])) + (
                        (lanes32[4] + lanes32[5]) + (lanes32[6] + lanes32[7])
                    )
                    for w in range(n_wg):
                        leaf64[w] = ((lanes64[0, w] + lanes64[1, w]) + (lanes64[2, w] + lanes64[3, w])) + (
                            (lanes64[4, w] + lanes64[5, w]) + (lanes64[6, w] + lanes64[7, w])
                        )
                while q < hi and index[q] < stop:  # the tail (or a leaf shorter than 8), in order
                    x = value[q]
                    leaf32 += x
                    for w in range(n_wg):
                        leaf64[w] += weights[w, index[q]] * np.float64(x)
                    q += 1
                stack32[top] = leaf32
                for w in range(n_wg):
                    stack64[top, w] = leaf64[w]
                top += 1
            energy[row_index, g] = stack32[0]
            for w in range(n_wg):
                moments[row_index, g, w] = stack64[0, w]
        row_index += 1
    return row_index, written, n_nan
