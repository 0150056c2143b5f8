"""Weights files: per-shower weights of a sample (e.g. DCTR weights, :mod:`calogen.eval.reweight`) and
their provenance, written atomically, read back with checks, and matched to the sample they were made for.

A weights file is HDF5 with dataset ``weights`` ``(N,)`` float64 and attributes recording the inputs
(paths, SHA-256), N, clip rule, value and count, calibration, folds, seed and effective sample size
(``docs/reweighting.md``); :func:`effective_sample_size` is ``(sum w)^2 / sum w^2``, the number of
unweighted showers with the same statistical power.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from calogen.errors import CalogenError

__all__ = ["FORMAT_VERSION", "ReweightError", "WeightsFile", "effective_sample_size", "read_weights", "weights_for_sample", "write_weights"]

FORMAT_VERSION = 1
"""Value of the ``calogen_weights`` attribute of weights files written by this version."""


class ReweightError(CalogenError):
    """Reweighting inputs, settings or a weights file are invalid."""


def effective_sample_size(weights: np.ndarray) -> float:
    """``(sum w)^2 / sum w^2``: N for equal weights, less the more the weights vary."""
    w = np.asarray(weights, np.float64)
    return float(w.sum() ** 2 / np.sum(w * w))


@dataclass(frozen=True)
class WeightsFile:
    """A weights file read back: ``weights`` ``(N,)`` float64 and its attributes."""

    path: Path
    weights: np.ndarray = field(repr=False)
    attrs: dict[str, Any]


def write_weights(path: str | os.PathLike[str], weights: np.ndarray, attrs: dict[str, Any]) -> Path:
    """Write ``weights`` ``(N,)`` and ``attrs`` (str, numbers, or JSON-ready values stored as JSON text)
    into an HDF5 file that appears at ``path`` only when complete."""
    from calogen.outputs import GuardedFile, atomic_path

    with atomic_path(path) as tmp:
        handle = GuardedFile(tmp)
        try:
            with h5py.File(handle, "w") as h5:
                h5.create_dataset("weights", data=np.asarray(weights, np.float64), track_times=False)
                h5.attrs["calogen_weights"] = FORMAT_VERSION
                for key, value in attrs.items():
                    h5.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)
        finally:
            handle.close()
        error = handle.error(path)
        if error is not None:
            raise error
    return Path(path)


def read_weights(path: str | os.PathLike[str]) -> WeightsFile:
    """Read and check a weights file (finite, non-negative weights with a positive sum)."""
    path = Path(path)
    if not path.is_file():
        raise ReweightError(f"{path}: no such weights file")
    try:
        with h5py.File(path, "r") as h5:
            if not isinstance(h5.get("weights"), h5py.Dataset) or "calogen_weights" not in h5.attrs:
                raise ReweightError(f"{path} is not a calogen weights file (no 'weights' dataset); write one with calogen reweight")
            weights = np.asarray(h5["weights"][()], np.float64)
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in h5.attrs.items()}
    except OSError as exc:
        raise ReweightError(f"{path}: not a readable HDF5 file: {exc}") from None
    if weights.ndim != 1 or not (np.all(np.isfinite(weights)) and np.all(weights >= 0) and weights.sum() > 0):
        raise ReweightError(f"{path}: weights must be a 1-D array of finite, non-negative values, not all zero")
    return WeightsFile(path, weights, attrs)


def weights_for_sample(path: str | os.PathLike[str], sample: str | os.PathLike[str], n_showers: int) -> WeightsFile:
    """The weights of ``path`` after checking they were made for ``sample`` (SHA-256) and have one weight per
    shower; raises :class:`ReweightError` naming the mismatch."""
    from calogen.io import file_sha256

    wf = read_weights(path)
    if wf.weights.size != n_showers:
        raise ReweightError(f"{path} holds {wf.weights.size} weights but {sample} has {n_showers} showers; use the weights made for this file")
    expected = wf.attrs.get("candidate_sha256")
    if expected is not None and expected != file_sha256(sample):
        raise ReweightError(
            f"{path} was made for {wf.attrs.get('candidate', '?')} (SHA-256 {str(expected)[:12]}...), not for {sample} "
            "(its contents differ); use the weights made for this file"
        )
    return wf
