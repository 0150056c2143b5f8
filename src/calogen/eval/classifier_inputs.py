"""Classifier inputs: the official low-level vector, input checks, and rows of the stack ``[reference; generated]``.

The networks see one virtual stack of both sides (reference label 0, generated label 1); :func:`gather`
copies only the rows of a batch out of it, :func:`split_weights` gives those rows' sample weights.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from calogen.eval.classifier_settings import (
    KINDS,
    MIN_SHOWERS_PER_SIDE,
    ClassifierError,
)
from calogen.geometry import Geometry

__all__ = ["check_inputs", "check_weights", "gather", "low_level_inputs", "split_weights", "stack_low_level"]


def low_level_inputs(
    energies: np.ndarray, showers: np.ndarray, *, threshold: float = 0.0, out: np.ndarray | None = None
) -> np.ndarray:
    """Official low-level classifier inputs ``[log10(E_inc / MeV), voxels / E_inc]``, in float32.

    As ``prepare_low_data_for_classifier`` of the official ``evaluate.py``: voxels below ``threshold``
    are zeroed, then divided by the incident energy, all in float32.

    Args:
        energies: incident energies ``(N,)`` or ``(N, 1)`` in MeV, positive.
        showers: voxel energies ``(N, voxels)`` in MeV.
        threshold: per-voxel threshold in MeV (the evaluation passes the geometry's).
        out: optional ``(N, 1 + voxels)`` float32 destination (e.g. rows of a larger array), written in
            place so that a large sample is stacked chunk by chunk without copies.

    Returns:
        ``(N, 1 + voxels)`` float32 (``out`` when given).
    """
    e = np.asarray(energies, dtype=np.float32).reshape(-1, 1)
    showers = np.asarray(showers)
    if showers.ndim != 2 or showers.shape[0] != e.shape[0]:
        raise ClassifierError(f"need showers (N, voxels) for {e.shape[0]} energies, got shape {showers.shape}")
    if not np.all(np.isfinite(e) & (e > 0)):
        raise ClassifierError("incident energies must be finite and positive (MeV)")
    shape = (e.shape[0], 1 + showers.shape[1])
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ClassifierError(f"out must be a float32 array of shape {shape}, got {out.dtype} {out.shape}")
    out[:, :1] = np.log10(e.astype(np.float64))  # float64: numpy's float32 log10 differs between versions by 1 ulp
    voxels = out[:, 1:]
    np.copyto(voxels, showers, casting="same_kind")
    voxels[voxels < np.float32(threshold)] = 0.0
    np.divide(voxels, e, out=voxels)
    return out


def stack_low_level(
    chunks: Iterable[tuple[np.ndarray, np.ndarray]], n: int, n_voxels: int, *, threshold: float = 0.0
) -> np.ndarray:
    """Low-level inputs of the first ``n`` showers of ``(energies, showers)`` chunks, ``(n, 1 + n_voxels)``
    float32, written chunk by chunk into one array: memory is that array plus one chunk (100k DS2
    showers: 2.6 GB; the official preparation keeps several float copies of every sample)."""
    out = np.empty((n, 1 + n_voxels), np.float32)
    row = 0
    for energies, showers in chunks:
        take = min(len(showers), n - row)
        low_level_inputs(np.asarray(energies)[:take], showers[:take], threshold=threshold, out=out[row : row + take])
        row += take
        if row == n:
            return out
    raise ClassifierError(f"the chunks hold only {row} showers, {n} were asked for")


def check_inputs(
    kind: str, reference: np.ndarray, generated: np.ndarray, geometry: Geometry | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sides as float32 tensors, after checking ``kind``, shapes, sizes, finiteness and the CNN's geometry."""
    if kind not in KINDS:
        raise ClassifierError(f"unknown classifier kind {kind!r}; choose one of {KINDS}")
    arrays = []
    for name, arr in (("reference", reference), ("generated", generated)):
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim != 2:
            raise ClassifierError(f"{name} inputs must be 2-D (showers, features), got shape {arr.shape}")
        if len(arr) < MIN_SHOWERS_PER_SIDE:
            raise ClassifierError(
                f"{name} inputs hold {len(arr)} showers; the test needs at least {MIN_SHOWERS_PER_SIDE} per side"
            )
        rows = max(1, (16 << 20) // max(1, arr.shape[1]))  # check in blocks: no full-size temporary
        if not all(np.isfinite(arr[i : i + rows]).all() for i in range(0, len(arr), rows)):
            raise ClassifierError(f"{name} inputs contain NaN or infinite values; check the showers and energies")
        arrays.append(torch.from_numpy(np.ascontiguousarray(arr)))
    ref, gen = arrays
    if ref.shape[1] != gen.shape[1]:
        raise ClassifierError(
            f"reference inputs have {ref.shape[1]} features but generated ones {gen.shape[1]}; "
            "build both with the same function and geometry"
        )
    if kind == "cnn":
        if geometry is None:
            raise ClassifierError("the cnn classifier needs geometry= to arrange voxels as (layer, alpha, r)")
        if not geometry.is_regular:
            raise ClassifierError(
                f"the cnn classifier needs a regular geometry (same r bins and alpha count in every layer); "
                f"{geometry.name!r} is irregular, use kind='cls-low' instead"
            )
        if ref.shape[1] != 1 + geometry.n_voxels:
            raise ClassifierError(
                f"cnn inputs need 1 + {geometry.n_voxels} columns for {geometry.name!r} "
                f"(build them with low_level_inputs), got {ref.shape[1]}"
            )
    return ref, gen


def check_weights(weights: np.ndarray, n: int) -> np.ndarray:
    """``(n,)`` float64 non-negative finite weights with a positive sum, or a :class:`ClassifierError`."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ClassifierError(f"generated weights have shape {w.shape}; expected ({n},), one per generated shower")
    if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
        raise ClassifierError("generated weights must be finite, non-negative and not all zero")
    return w


def split_weights(rows: np.ndarray, n_ref: int, gen_weights: np.ndarray | None) -> torch.Tensor | None:
    """Sample weights of ``rows`` of ``[ref; gen]``: 1 for reference rows, generated weights scaled to mean 1."""
    if gen_weights is None:
        return None
    is_gen = rows >= n_ref
    w = np.ones(len(rows), np.float64)
    w[is_gen] = gen_weights[rows[is_gen] - n_ref]
    w[is_gen] /= w[is_gen].mean()
    return torch.from_numpy(w.astype(np.float32))


def gather(ref: torch.Tensor, gen: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels for ``rows`` of the virtual stack ``[ref; gen]`` (labels 0 and 1)."""
    is_gen = rows >= len(ref)
    x = torch.empty((len(rows), ref.shape[1]), dtype=torch.float32)
    x[torch.from_numpy(~is_gen)] = ref[torch.from_numpy(rows[~is_gen])]
    x[torch.from_numpy(is_gen)] = gen[torch.from_numpy(rows[is_gen] - len(ref))]
    return x, torch.from_numpy(is_gen.astype(np.float32))
