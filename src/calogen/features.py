"""High-level shower features in the CaloChallenge convention, computed chunk by chunk.

For every shower, after zeroing voxels below the per-voxel threshold ``t`` (``E_v < t -> 0``):

* total energy ``E_tot = sum_v E_v`` and the incident energy ``E_inc``;
* layer energies ``E_l = sum_{v in l} E_v``;
* for alpha-binned layers the energy-weighted centres and widths in the CaloChallenge "eta"/"phi"
  coordinates ``x = r cos(alpha)``, ``y = r sin(alpha)`` (mm)::

      <x>_l = sum x E / (E_l + 1e-16),   width_x = sqrt(max(sum x^2 E / (E_l + 1e-16) - <x>_l^2, 0))

  A layer without energy therefore has centre 0 and width 0, as in the official code;
* the same centre and width in the radial coordinate ``r`` for every non-empty layer;
* sparsity per layer: the fraction of voxels that are zero after the threshold
  (official: ``1 - mean(E_v > 0)``);
* the voxel-energy spectrum and the mean shower.

The arithmetic follows ``HighLevelFeatures.py`` and the ``__main__`` block of ``evaluate.py`` of the
CaloChallenge evaluation (github.com/CaloChallenge/homepage, ``code/``, commit ad3a816 of 2025-01-02)
operation by operation and in the same dtypes (voxels below the threshold zeroed as
``np.where(shower < min_energy, 0, shower)``, energy sums in float32 from float32 voxels, moments in
float64), so that histograms and vectors built from these features reproduce the official ones.
Deliberate differences:

* layers without alpha binning get NaN centres/widths and empty layers get NaN moments and sparsity
  (the official code has no entry for them; no official histogram or vector uses them);
* the voxel spectrum keeps every above-threshold value only up to a budget (134M voxels), a fine grid
  of them always (:mod:`calogen.voxel_spectrum`), so 100k DS3 showers stream in bounded memory;
* NaN voxel energies raise :class:`FeatureError` (the official code would propagate them).

:func:`high_level_vector` is the official high-level vector (classifier input and FPD/KPD input):
362 columns on DS2, in the column order of ``prepare_high_data_for_classifier``.

Thresholding, the per-layer sums, the non-zero counts, the mean shower and the voxel spectrum are
gathered in one compiled pass over each chunk, visiting only above-threshold voxels while keeping
numpy's summation order (:mod:`calogen._pairwise`); the chunk is used in place, without temporaries.

Example:
    >>> import numpy as np
    >>> from calogen.geometry import Geometry
    >>> g = Geometry.builtin("tiny")
    >>> showers = np.zeros((1, g.n_voxels), np.float32); showers[0, 0] = 5.0
    >>> f = compute_features(np.array([10.0]), showers, g)
    >>> float(f.e_total[0]), float(f.e_layer[0, 0]), float(f.r_centre[0, 0])
    (5.0, 5.0, 4.0)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from calogen._pairwise import chunk_sums, pairwise_program
from calogen.errors import CalogenError
from calogen.geometry import Geometry
from calogen.voxel_spectrum import SpectrumCounter, VoxelSpectrum

__all__ = [
    "FeatureAccumulator",
    "FeatureError",
    "ShowerFeatures",
    "HIGH_LEVEL_COLUMNS",
    "compute_features",
    "features_from_file",
    "high_level_blocks",
    "high_level_column_names",
    "high_level_vector",
]

CHUNK_BYTES = 256 << 20
"""Default streaming chunk: about 256 MiB of float32 voxels."""

VALUE_BUFFER = 1 << 22
"""Above-threshold voxel values collected per compiled pass (16 MiB of float32)."""


class FeatureError(CalogenError):
    """Inputs to the feature computation are inconsistent (shapes, threshold, geometry)."""


@dataclass(frozen=True)
class ShowerFeatures:
    """Per-shower high-level features of one sample (``N`` showers, ``L`` layers of ``geometry``).

    Args:
        e_inc: ``(N,)`` float32 incident energies, MeV.
        e_total: ``(N,)`` float32 deposited energy after the threshold, MeV.
        e_layer: ``(N, L)`` float32 energy per layer, MeV (0 for empty layers).
        eta_centre, phi_centre: ``(N, L)`` float64 energy-weighted centres in mm; NaN for layers
            without alpha binning.
        eta_width, phi_width: ``(N, L)`` float64 widths in mm; NaN for layers without alpha binning.
        r_centre, r_width: ``(N, L)`` float64 radial centre and width in mm; NaN for empty layers.
        sparsity: ``(N, L)`` float64 fraction of zero voxels; NaN for empty layers.
        voxel_spectrum: the above-threshold voxel energies.
        mean_shower: ``(voxels,)`` float32 average shower after the threshold, MeV.
        n_showers: ``N``.
        threshold: per-voxel threshold applied, MeV.
        geometry: the readout geometry.
    """

    e_inc: np.ndarray
    e_total: np.ndarray
    e_layer: np.ndarray
    eta_centre: np.ndarray
    phi_centre: np.ndarray
    eta_width: np.ndarray
    phi_width: np.ndarray
    r_centre: np.ndarray
    r_width: np.ndarray
    sparsity: np.ndarray
    voxel_spectrum: VoxelSpectrum
    mean_shower: np.ndarray
    n_showers: int
    threshold: float
    geometry: Geometry

    @property
    def e_ratio(self) -> np.ndarray:
        """``(N,)`` float32 ``E_tot / E_inc``."""
        return self.e_total / self.e_inc


_PER_SHOWER = (
    "e_inc", "e_total", "e_layer", "eta_centre", "phi_centre", "eta_width", "phi_width",
    "r_centre", "r_width", "sparsity",
)  # fmt: skip


@dataclass(frozen=True)
class _Segments:
    """Voxel ranges summed by :func:`calogen._pairwise.chunk_sums`: every non-empty layer, then the whole shower."""

    start: np.ndarray
    size: np.ndarray
    n_weights: np.ndarray
    weights: np.ndarray
    leaf_start: np.ndarray
    leaf_len: np.ndarray
    leaf_ptr: np.ndarray
    program: np.ndarray
    program_ptr: np.ndarray

    @classmethod
    def from_geometry(cls, geometry: Geometry) -> _Segments:
        layers = np.asarray(geometry.nonempty_layers, np.int64)
        start = np.append(geometry.layer_offsets[layers], 0)
        size = np.append(geometry.layer_offsets[layers + 1] - geometry.layer_offsets[layers], geometry.n_voxels)
        binned = set(geometry.alpha_binned_layers)
        n_weights = np.array([6 if i in binned else 2 for i in layers] + [0], np.int64)
        r, eta, phi = geometry.voxel_r, geometry.voxel_eta, geometry.voxel_phi
        weights = np.stack([r, r * r, eta, eta * eta, phi, phi * phi])  # official: coord * coord * E
        leaf_start: list[int] = []
        leaf_len: list[int] = []
        program: list[int] = []
        leaf_ptr, program_ptr = [0], [0]
        for n in size:
            starts, lengths, prog = pairwise_program(int(n))
            leaf_start += starts
            leaf_len += lengths
            program += prog
            leaf_ptr.append(len(leaf_start))
            program_ptr.append(len(program))
        as_int = lambda values: np.asarray(values, np.int64)  # noqa: E731
        return cls(start, size, n_weights, weights, as_int(leaf_start), as_int(leaf_len), as_int(leaf_ptr),
                   as_int(program), as_int(program_ptr))  # fmt: skip

    def sums(
        self, data: np.ndarray, threshold: float, voxel_sum: np.ndarray, buffer: np.ndarray, spectrum: SpectrumCounter
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(energy (N, S) float32, moments (N, S, 6) float64, non-zero counts (N, S))`` of thresholded ``data``.

        The thresholded voxels are also added to ``voxel_sum`` and, through ``buffer``, to ``spectrum``.
        """
        n, n_seg = data.shape[0], self.start.size
        energy = np.zeros((n, n_seg), np.float32)
        moments = np.zeros((n, n_seg, self.weights.shape[0]), np.float64)
        nonzero = np.zeros((n, n_seg), np.int64)
        row = 0
        while row < n:
            row, written, n_nan = chunk_sums(
                data, row, np.float32(threshold), self.start, self.size, self.n_weights, self.weights,
                self.leaf_start, self.leaf_len, self.leaf_ptr, self.program, self.program_ptr,
                energy, moments, nonzero, voxel_sum, buffer,
            )  # fmt: skip
            if n_nan:
                raise FeatureError(f"showers hold {n_nan} NaN voxel energies (before row {row}); remove or fix them")
            spectrum.add(buffer[:written])
        return energy, moments, nonzero


def _centre_and_width(first: np.ndarray, second: np.ndarray, e_sum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``S1 / (E + 1e-16)`` and width ``sqrt(max(S2 / (E + 1e-16) - centre^2, 0))``, official dtypes."""
    denominator = e_sum + np.float32(1e-16)
    centre = first / denominator
    return centre, np.sqrt((second / denominator - centre**2).clip(min=0.0))


def _resolve_threshold(geometry: Geometry, threshold: float | None) -> float:
    value = geometry.threshold if threshold is None else float(threshold)
    if not np.isfinite(value) or value < 0:
        raise FeatureError(f"the voxel threshold must be a finite energy >= 0 MeV, got {threshold!r}")
    return value


class FeatureAccumulator:
    """Accumulates :class:`ShowerFeatures` over chunks of showers, so no file has to fit in memory.

    Args:
        geometry: the readout of the showers.
        threshold: per-voxel threshold in MeV (default ``geometry.threshold``).

    Example:
        >>> import numpy as np
        >>> from calogen.geometry import Geometry
        >>> acc = FeatureAccumulator(Geometry.builtin("tiny"))
        >>> acc.update(np.ones(2), np.ones((2, 120), np.float32))
        >>> acc.result().n_showers
        2
    """

    def __init__(self, geometry: Geometry, threshold: float | None = None) -> None:
        self.geometry = geometry
        self.threshold = _resolve_threshold(geometry, threshold)
        self._parts: dict[str, list[np.ndarray]] = {name: [] for name in _PER_SHOWER}
        self._spectrum = SpectrumCounter()
        self._shower_sum = np.zeros(geometry.n_voxels, np.float64)
        self._buffer = np.empty(max(VALUE_BUFFER, 4 * geometry.n_voxels), np.float32)
        self._n = 0
        self._layers = np.asarray(geometry.nonempty_layers, np.int64)
        self._segments = _Segments.from_geometry(geometry)

    def update(self, energies: np.ndarray, showers: np.ndarray) -> None:
        """Add a chunk: ``energies`` ``(n,)`` or ``(n, 1)`` MeV and ``showers`` ``(n, voxels)`` MeV.

        Float32 C-contiguous showers (as read from a file) are used in place, without a copy.
        """
        e_inc = np.asarray(energies, dtype=np.float32).reshape(-1)
        showers = np.ascontiguousarray(showers, dtype=np.float32)
        if showers.ndim != 2 or showers.shape[1] != self.geometry.n_voxels:
            raise FeatureError(
                f"showers must have shape (n, {self.geometry.n_voxels}) for geometry {self.geometry.name!r}, "
                f"got {showers.shape}"
            )
        if e_inc.shape[0] != showers.shape[0]:
            raise FeatureError(f"{e_inc.shape[0]} incident energies but {showers.shape[0]} showers")
        sums = self._segments.sums(showers, self.threshold, self._shower_sum, self._buffer, self._spectrum)
        for name, value in self._chunk_features(e_inc, *sums).items():
            self._parts[name].append(value)
        self._n += showers.shape[0]

    def _chunk_features(
        self, e_inc: np.ndarray, energy: np.ndarray, moments: np.ndarray, nonzero: np.ndarray
    ) -> dict[str, np.ndarray]:
        n, n_layers, cols = energy.shape[0], self.geometry.n_layers, self._layers
        e_sum, moments, nonzero = energy[:, :-1], moments[:, :-1], nonzero[:, :-1]
        out: dict[str, np.ndarray] = {"e_inc": e_inc, "e_total": energy[:, -1].copy()}
        out["e_layer"] = np.zeros((n, n_layers), np.float32)
        out["e_layer"][:, cols] = e_sum
        for name in _PER_SHOWER[3:]:
            out[name] = np.full((n, n_layers), np.nan, np.float64)
        out["sparsity"][:, cols] = 1.0 - nonzero / self._segments.size[:-1]
        out["r_centre"][:, cols], out["r_width"][:, cols] = _centre_and_width(moments[..., 0], moments[..., 1], e_sum)
        binned = self._segments.n_weights[:-1] == 6
        for axis, w in (("eta", 2), ("phi", 4)):
            centre, width = _centre_and_width(moments[:, binned, w], moments[:, binned, w + 1], e_sum[:, binned])
            out[f"{axis}_centre"][:, cols[binned]], out[f"{axis}_width"][:, cols[binned]] = centre, width
        return out

    @property
    def shower_sum(self) -> np.ndarray:
        """``(voxels,)`` float64 sum of the above-threshold showers added so far (read-only view)."""
        view = self._shower_sum.view()
        view.flags.writeable = False
        return view

    def result(self) -> ShowerFeatures:
        """The features of all showers added so far."""
        if self._n == 0:
            raise FeatureError("no showers were added; features need at least one shower")
        arrays = {name: np.concatenate(parts, axis=0) for name, parts in self._parts.items()}
        return ShowerFeatures(
            **arrays,
            voxel_spectrum=self._spectrum.result(),
            mean_shower=(self._shower_sum / self._n).astype(np.float32),
            n_showers=self._n,
            threshold=self.threshold,
            geometry=self.geometry,
        )


def compute_features(
    energies: np.ndarray, showers: np.ndarray, geometry: Geometry, *, threshold: float | None = None
) -> ShowerFeatures:
    """Features of in-memory showers: ``energies`` ``(N,)``/``(N, 1)`` MeV, ``showers`` ``(N, voxels)`` MeV."""
    acc = FeatureAccumulator(geometry, threshold)
    acc.update(energies, showers)
    return acc.result()


def features_from_file(
    path: str | os.PathLike[str],
    geometry: Geometry,
    *,
    threshold: float | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> ShowerFeatures:
    """Stream a CaloChallenge HDF5 file chunk by chunk into :class:`ShowerFeatures`.

    Args:
        path: the shower file.
        geometry: its readout (the voxel count is checked).
        threshold: per-voxel threshold in MeV (default ``geometry.threshold``).
        chunk_size: showers per chunk (default: about 256 MiB of voxels).
        progress: show a tqdm progress bar.
    """
    return accumulate_file(path, geometry, threshold=threshold, chunk_size=chunk_size, progress=progress).result()


def accumulate_file(
    path: str | os.PathLike[str],
    geometry: Geometry,
    *,
    threshold: float | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> FeatureAccumulator:
    """A :class:`FeatureAccumulator` fed with every shower of ``path`` (the arguments of :func:`features_from_file`)."""
    from calogen.io import ShowerFile

    rows = chunk_size or max(1, CHUNK_BYTES // (4 * geometry.n_voxels))
    acc = FeatureAccumulator(geometry, threshold)
    with ShowerFile(path, geometry) as f:
        chunks = f.iter_chunks(rows)
        if progress:
            from tqdm import tqdm

            chunks = tqdm(chunks, total=-(-f.n_showers // rows), desc=f"features {os.fspath(path)}", unit="chunk")
        for chunk in chunks:
            acc.update(chunk.energies, chunk.showers)
    return acc


HIGH_LEVEL_COLUMNS = ("official", "pre-2023")
"""Column sets of :func:`high_level_vector`: the current official one, and the 226-column one (on DS2)
that the official code used before sparsity and radial moments were added (Nov 2023)."""


def high_level_blocks(geometry: Geometry, columns: str) -> list[tuple[str, tuple[int, ...] | None]]:
    """``(feature, layers)`` blocks of the vector in official order; ``layers`` None for one column."""
    if columns not in HIGH_LEVEL_COLUMNS:
        raise FeatureError(f"unknown high-level column set {columns!r}; choose one of {HIGH_LEVEL_COLUMNS}")
    layers, binned = tuple(geometry.nonempty_layers), tuple(geometry.alpha_binned_layers)
    blocks: list[tuple[str, tuple[int, ...] | None]] = [
        ("log10_e_inc", None), ("log10_e_layer", layers),
        ("eta_centre", binned), ("phi_centre", binned), ("eta_width", binned), ("phi_width", binned),
    ]  # fmt: skip
    if columns == "official":
        blocks += [("log10_e_total", None), ("sparsity", layers), ("r_centre", layers), ("r_width", layers)]
    return blocks


def high_level_column_names(geometry: Geometry, columns: str = "official") -> list[str]:
    """Names of the :func:`high_level_vector` columns, e.g. ``log10_e_inc``, ``eta_centre_12``, ``sparsity_0``."""
    return [name if layers is None else f"{name}_{i}" for name, layers in high_level_blocks(geometry, columns)
            for i in (layers if layers is not None else (None,))]  # fmt: skip


def high_level_vector(features: ShowerFeatures, *, columns: str = "official") -> np.ndarray:
    """The official high-level vector: classifier input and FPD/KPD input, ``(N, d)`` float64.

    Columns in the order of ``prepare_high_data_for_classifier`` of the CaloChallenge ``evaluate.py``
    (2025-01-02), names as :func:`high_level_column_names`:

    1. ``log10(E_inc)``;
    2. ``log10(E_l + 1e-8)`` for every non-empty layer ``l``;
    3. over the alpha-binned layers: eta centres / 100, then phi centres / 100, eta widths / 100 and
       phi widths / 100 (mm / 100);
    4. ``log10(E_tot + 1e-8)``;
    5. sparsity (fraction of zero voxels) for every non-empty layer;
    6. radial centres / 100, then radial widths / 100 for every non-empty layer.

    DS2: 1 + 45 + 4 x 45 + 1 + 3 x 45 = 362 columns. Logarithms are taken in float32 from the float32
    energies and the result is float64, as in the official code. ``columns="pre-2023"`` keeps blocks 1-3
    only (226 columns on DS2), the vector of the official code before Nov 2023.
    """
    per_shower = {
        "log10_e_inc": np.log10(features.e_inc).reshape(-1, 1),
        "log10_e_layer": np.log10(features.e_layer + 1e-8),
        "log10_e_total": np.log10(features.e_total + 1e-8).reshape(-1, 1),
        "sparsity": features.sparsity,
    }
    parts = []
    for name, layers in high_level_blocks(features.geometry, columns):
        if name in per_shower:
            values = per_shower[name]
            parts.append(values if layers is None else values[:, list(layers)])
        else:
            parts.append(getattr(features, name)[:, list(layers or ())] / 1e2)
    return np.concatenate(parts, axis=1).astype(np.float64, copy=False)
