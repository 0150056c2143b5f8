"""A fast toy shower maker for benchmarks and statistical tests (not physics: see calogen.sim for that).

Each shower is a set of point deposits ("hits") summed into the voxels of any geometry:

* number of hits ``M ~ Poisson(hits_per_gev * (E_inc / 1 GeV)^0.35)``, so DS2 showers light up
  roughly 100-2000 of their 6480 voxels, like the CaloChallenge files;
* depth: the fraction ``z`` of the non-empty layer stack is ``Gamma(k, theta)`` with mean
  ``0.22 + 0.03 ln(E_inc / 1 GeV)`` (the maximum moves back logarithmically with energy);
* radius: exponential core (80 %) plus halo, scaled to the outer radius of the layer; azimuth uniform;
* hit energies ``~ Exp(1)``, normalised to ``E_inc * (1 + 0.02 N(0, 1))``; deposits beyond the
  last layer or the outer radius leak; voxels below ``geometry.threshold`` are zeroed.

Example:
    >>> import numpy as np
    >>> from calogen.geometry import Geometry
    >>> g = Geometry.builtin("ds2")
    >>> s = synthetic_showers(g, np.full(3, 1e4), np.random.default_rng(0))
    >>> s.shape, s.dtype
    ((3, 6480), dtype('float32'))
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from calogen.geometry import Geometry
from calogen.io import ENERGY_KEY, SHOWER_KEY, ShowerWriter, atomic_path

__all__ = ["synthetic_energies", "synthetic_showers", "write_replicated_file", "write_synthetic_file"]


def synthetic_energies(geometry: Geometry, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n,)`` float32 incident energies in MeV: log-uniform 1 GeV-1 TeV, or DS1-like powers of two
    ``2^8..2^22`` MeV for irregular geometries."""
    if not geometry.is_regular:
        return (2.0 ** rng.integers(8, 23, n)).astype(np.float32)
    return np.exp(rng.uniform(math.log(1e3), math.log(1e6), n)).astype(np.float32)


def synthetic_showers(
    geometry: Geometry,
    energies: np.ndarray,
    rng: np.random.Generator,
    *,
    hits_per_gev: float = 200.0,
    depth_shift: float = 0.0,
) -> np.ndarray:
    """``(N, voxels)`` float32 toy showers in MeV for incident ``energies`` ``(N,)`` MeV.

    Args:
        geometry: readout to fill.
        energies: incident energies, MeV.
        rng: the random generator.
        hits_per_gev: mean number of deposits of a 1 GeV shower.
        depth_shift: added to the mean depth fraction (a mis-modelled longitudinal profile).
    """
    energies = np.asarray(energies, np.float64).reshape(-1)
    n, n_vox = energies.size, geometry.n_voxels
    gev = energies / 1e3
    n_hits = rng.poisson(hits_per_gev * gev**0.35)
    owner = np.repeat(np.arange(n), n_hits)
    total = int(n_hits.sum())

    layers = np.asarray(geometry.nonempty_layers)
    shape_k = 3.0
    mean_depth = 0.22 + 0.03 * np.log(gev) + depth_shift
    depth = rng.gamma(shape_k, 1.0, total) * (mean_depth / shape_k)[owner]
    slot = np.floor(depth * layers.size).astype(np.int64)
    inside = slot < layers.size
    layer = layers[np.minimum(slot, layers.size - 1)]

    outer = np.array([geometry.layers[i].r_edges[-1] for i in range(geometry.n_layers)])[layer]
    core = rng.random(total) < 0.8
    radius = rng.exponential(1.0, total) * np.where(core, 0.04, 0.25) * outer
    inside &= radius < outer
    alpha = rng.uniform(-math.pi, math.pi, total)

    weight = rng.exponential(1.0, total)
    norm = np.bincount(owner, weights=weight, minlength=n)
    response = energies * (1.0 + 0.02 * rng.standard_normal(n))
    deposit = weight * (response / np.maximum(norm, 1e-30))[owner]

    voxel = np.empty(total, np.int64)
    for i in np.unique(layer):
        sel = layer == i
        spec = geometry.layers[i]
        r_bin = np.clip(np.searchsorted(spec.r_edges, radius[sel], side="right") - 1, 0, spec.n_r - 1)
        a_bin = np.minimum(((alpha[sel] + math.pi) / (2 * math.pi) * spec.n_alpha).astype(np.int64), spec.n_alpha - 1)
        voxel[sel] = geometry.layer_offsets[i] + a_bin * spec.n_r + r_bin
    flat = owner[inside] * n_vox + voxel[inside]
    showers = np.bincount(flat, weights=deposit[inside], minlength=n * n_vox).reshape(n, n_vox).astype(np.float32)
    showers[showers < geometry.threshold] = 0.0
    return showers


def write_synthetic_file(
    path: str | os.PathLike[str], geometry: Geometry, n: int, seed: int, *, chunk: int = 2000, **model: float
) -> Path:
    """Write ``n`` toy showers to a CaloChallenge file (atomically), ``chunk`` at a time; returns the path."""
    rng = np.random.default_rng(seed)
    with ShowerWriter(path, geometry, attrs={"geometry": geometry.name, "seed": seed, "maker": "synthetic"}) as w:
        for start in range(0, n, chunk):
            e = synthetic_energies(geometry, min(chunk, n - start), rng)
            w.append(e, synthetic_showers(geometry, e, rng, **model))
    return Path(path)


def write_replicated_file(
    path: str | os.PathLike[str], geometry: Geometry, n: int, distinct: int, seed: int, *, chunk_rows: int = 25
) -> Path:
    """Write ``n`` showers made of ``distinct`` toy showers repeated, each copy with jittered incident energies.

    The distinct showers are compressed once (gzip + shuffle, ``chunk_rows`` per HDF5 chunk, as
    :class:`calogen.io.ShowerWriter` stores DS3) in an in-memory file; every repeat copies the
    compressed chunks (``write_direct_chunk``), so a 100k-shower DS3 file takes seconds, not the
    minutes of compressing 16 GB. Copy ``r`` has energies ``E_k (1 + 0.01 N(0, 1))``. Written atomically.

    Args:
        path: the output file.
        geometry: readout of the showers.
        n: showers in the file (a multiple of ``distinct``).
        distinct: distinct showers (a multiple of ``chunk_rows``).
        seed: seed of the toy showers and of the jitter.
        chunk_rows: showers per HDF5 chunk.
    """
    import h5py

    if n % distinct or distinct % chunk_rows:
        raise ValueError(f"n ({n}) must be a multiple of distinct ({distinct}), itself a multiple of {chunk_rows}")
    rng = np.random.default_rng(seed)
    energies = synthetic_energies(geometry, distinct, rng)
    layout = {"chunks": (chunk_rows, geometry.n_voxels), "compression": "gzip", "shuffle": True, "dtype": "f4"}
    with h5py.File(f"template-{seed}", "w", driver="core", backing_store=False) as template:
        ds = template.create_dataset(SHOWER_KEY, shape=(distinct, geometry.n_voxels), **layout)
        for start in range(0, distinct, chunk_rows * 20):
            stop = min(start + chunk_rows * 20, distinct)
            ds[start:stop] = synthetic_showers(geometry, energies[start:stop], rng)
        chunks = [ds.id.read_direct_chunk((start, 0)) for start in range(0, distinct, chunk_rows)]
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as out:
        jitter = 1.0 + 0.01 * rng.standard_normal((n // distinct, distinct))
        out.create_dataset(ENERGY_KEY, data=(energies * jitter).reshape(-1, 1).astype(np.float32), compression="gzip")
        showers = out.create_dataset(SHOWER_KEY, shape=(n, geometry.n_voxels), **layout)
        for copy in range(n // distinct):
            for k, (mask, data) in enumerate(chunks):
                showers.id.write_direct_chunk((copy * distinct + k * chunk_rows, 0), data, mask)
        out.attrs.update({"geometry": geometry.name, "seed": seed, "maker": "synthetic-replicated"})
    return Path(path)
