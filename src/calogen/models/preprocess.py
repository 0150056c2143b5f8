"""Fitted, exactly invertible preprocessing between showers (MeV) and the spaces the networks see.

Three transforms, each fitted on training data and saved beside the model:

* incident energy ``E`` (MeV): ``c = (ln E - ln E_min) / (ln E_max - ln E_min)``, in [0, 1] over the
  training range; a model conditioned on the incident direction ``(theta, phi)`` (radians) also gets the
  unit vector ``(sin theta cos phi, sin theta sin phi, cos theta)`` (:func:`direction_features`; the same
  for every ``phi`` at normal incidence), and the fit records the training direction when it is fixed;
* layer-energy vector ``y = (E_dep / (k_e E), f_1, ..., f_L)`` with ``f_l = E_l / E_dep`` over the
  non-empty layers: ``z = (logit(a + (1 - 2a) y) - mu) / sigma`` per component;
* voxels ``v``: ``z = (logit(a + (1 - 2a) v / (k_v E)) - mu_i) / sigma_i`` per voxel;
* optionally the radial vector (the radial model's data): ``q_lr = E_lr / E_l``, the fraction of layer
  ``l``'s energy in its radial bin ``r``, on a ``(L, R_max)`` grid of slots (:func:`~calogen.models.voxel_groups.radial_slots`):
  ``z = (logit(a + (1 - 2a) q) - mu_lr) / sigma_lr``, set to 0 for empty layers and unused slots.

``a`` is a small logit offset (1e-6), ``k_e`` and ``k_v`` are multiples of the incident energy chosen
so every training value lies below 1 (larger values, possible only outside the training set, are clipped
to 1). Standard deviations have floors, so a voxel empty in all training showers cannot blow up. The inverses clip at zero; fractions are renormalised to sum 1.
All maps are torch functions (float32 or float64), so the exported ONNX graph can contain them. The
inverses compute the sigmoid as ``1 / (1 + exp(-x))`` (:func:`sigmoid`), in PyTorch and in the graph
alike, because onnxruntime's own ``Sigmoid`` is accurate only in absolute terms (see there).

Reference: the logit-and-standardise scheme of CaloDiffusion, Amram & Pedro, arXiv:2308.03876.

Example:
    >>> import numpy as np, torch
    >>> from calogen.geometry import Geometry
    >>> g = Geometry.builtin("tiny")
    >>> rng = np.random.default_rng(0)
    >>> e = np.full((4, 1), 1e3); v = rng.exponential(1.0, (4, g.n_voxels))
    >>> pre = Preprocessor.fit(g, e, v)
    >>> z = pre.voxels_forward(torch.tensor(v), torch.tensor(e))
    >>> bool(torch.allclose(pre.voxels_inverse(z, torch.tensor(e)), torch.tensor(v)))
    True
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from calogen.errors import CalogenError
from calogen.geometry import Geometry
from calogen.models.voxel_groups import layer_vector, radial_vector

if TYPE_CHECKING:
    from calogen.cell_geometry import CellGeometry

__all__ = [
    "DIRECTION_FEATURES", "LOGIT_ALPHA", "Preprocessor", "check_directions", "direction_features", "same_direction",
    "sigmoid",
]  # fmt: skip

LOGIT_ALPHA = 1e-6
"""Offset ``a`` of the logit transform, keeping ``logit(0)`` finite."""

_HEADROOM = 1.05
"""Factor above the largest training ratio used for ``k_e`` and ``k_v``."""

_MIN_STD_VOXEL, _MIN_STD_LAYER = 1.0, 0.05
"""Floors of the fitted standard deviations (logit units): a voxel that is always empty in training
must not turn a rare deposit elsewhere into a value of order 1e4."""


def _logit(u: torch.Tensor) -> torch.Tensor:
    return torch.log(u) - torch.log1p(-u)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``1 / (1 + exp(-x))``, relative error of a few float32 ulps everywhere, in PyTorch and once exported.

    ``torch.sigmoid`` exports as ONNX ``Sigmoid``, which onnxruntime 1.32 evaluates with an absolute
    error up to 1.4e-7: 12% of the value near ``x = logit(1e-6)``, where the inverse transforms subtract
    the logit offset, and the subtraction makes it 12% of a voxel's energy. This form exports as ``Exp``,
    ``Add`` and ``Div`` (relative error 1.1e-7 in both); ``exp`` overflowing to inf gives exactly 0.
    """
    return 1 / (1 + torch.exp(-x))


DIRECTION_FEATURES = 3
"""Condition columns of the incident direction (:func:`direction_features`)."""


def direction_features(directions: torch.Tensor) -> torch.Tensor:
    """Unit vector ``(B, 3)`` ``(sin theta cos phi, sin theta sin phi, cos theta)`` of directions ``(B, 2)`` ``(theta, phi)`` rad."""
    theta, phi = directions[:, 0:1], directions[:, 1:2]
    return torch.cat([torch.sin(theta) * torch.cos(phi), torch.sin(theta) * torch.sin(phi), torch.cos(theta)], dim=1)


def check_directions(directions: np.ndarray, n: int) -> np.ndarray:
    """Directions ``(n, 2)`` float64 from ``(n, 2)`` or one ``(2,)`` ``(theta, phi)`` in radians.

    Raises:
        CalogenError: another shape, or a value outside ``0 <= theta < pi / 2``, ``|phi| <= 2 pi`` (or not finite).
    """
    d = np.asarray(directions, dtype=np.float64)
    if d.shape == (2,):
        d = np.broadcast_to(d, (n, 2))
    if d.shape != (n, 2):
        raise CalogenError(f"directions must be (theta, phi) in radians, one pair or one per shower ({n}, 2); got shape {d.shape}")
    theta, phi = d[:, 0], d[:, 1]
    bad = ~(np.isfinite(theta) & np.isfinite(phi) & (theta >= 0) & (theta < math.pi / 2) & (np.abs(phi) <= 2 * math.pi))
    if bad.any():
        i = int(np.argmax(bad))
        raise CalogenError(
            f"direction {i} (theta {theta[i]:.4g} rad, phi {phi[i]:.4g} rad) is out of range; "
            "need 0 <= theta < pi/2 (polar angle to the layer normal) and |phi| <= 2 pi"
        )
    return np.array(d, order="C")  # a writable copy (a broadcast (2,) pair is a read-only view)


def same_direction(directions: np.ndarray, direction: tuple[float, float], tolerance: float = 1e-6) -> bool:
    """True when every direction ``(n, 2)`` ``(theta, phi)`` rad points along ``direction`` to within ``tolerance``
    (distance of the unit vectors, about the angle between them): at normal incidence every ``phi`` is the same direction."""
    units = direction_features(torch.as_tensor(np.asarray([direction, *np.asarray(directions).reshape(-1, 2)], dtype=np.float64)))
    return bool((units[1:] - units[:1]).norm(dim=1).le(tolerance).all())



@dataclass(frozen=True)
class Preprocessor:
    """Fitted preprocessing statistics; see the module docstring for the formulas.

    Construction checks them (:class:`CalogenError`): finite numbers, ``0 < e_min < e_max``, positive
    scales and standard deviations, ``0 < alpha < 0.5`` and matching vector sizes, so damaged statistics
    (``e_min: NaN``) cannot silently turn every shower into zeros.

    Args:
        e_min, e_max: training range of incident energies (MeV).
        energy_scale: ``k_e``, multiple of E dividing the deposited energy.
        voxel_scale: ``k_v``, multiple of E dividing every voxel.
        layer_mean, layer_std: ``(1 + L,)`` standardisation of the logit layer vector.
        voxel_mean, voxel_std: ``(voxels,)`` standardisation of the logit voxels.
        alpha: logit offset.
        radial_mean, radial_std: ``(L * R_max,)`` standardisation of the logit radial vector (size 0:
            no radial model).
        theta, phi: the default incident direction (rad): the training showers' when they share one,
            else normal incidence.
    """

    e_min: float
    e_max: float
    energy_scale: float
    voxel_scale: float
    layer_mean: np.ndarray
    layer_std: np.ndarray
    voxel_mean: np.ndarray
    voxel_std: np.ndarray
    alpha: float = LOGIT_ALPHA
    radial_mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    radial_std: np.ndarray = field(default_factory=lambda: np.zeros(0))
    theta: float = 0.0
    phi: float = 0.0

    def __post_init__(self) -> None:
        for name in _SCALARS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise CalogenError(f"preprocessing {name} must be a finite number, got {value!r}")
        if not 0 < self.e_min < self.e_max or self.energy_scale <= 0 or self.voxel_scale <= 0 or not 0 < self.alpha < 0.5:
            raise CalogenError(
                f"preprocessing needs 0 < e_min < e_max, scales > 0 and 0 < alpha < 0.5; got e_min {self.e_min}, e_max {self.e_max}, "
                f"energy_scale {self.energy_scale}, voxel_scale {self.voxel_scale}, alpha {self.alpha}"
            )
        for mean, std in (("layer_mean", "layer_std"), ("voxel_mean", "voxel_std"), ("radial_mean", "radial_std")):
            m, s = np.asarray(getattr(self, mean)), np.asarray(getattr(self, std))
            if m.ndim != 1 or m.shape != s.shape or not (np.isfinite(m).all() and np.isfinite(s).all() and (s > 0).all()):
                raise CalogenError(f"preprocessing {mean} and {std} must be finite vectors of one size with {std} > 0")
        if self.layer_dim < 2:
            raise CalogenError(f"preprocessing layer statistics need at least 2 entries, got {self.layer_dim}")
        check_directions(np.array([self.theta, self.phi]), 1)

    @property
    def layer_dim(self) -> int:
        """Dimension ``1 + L`` of the layer-energy vector."""
        return int(self.layer_mean.size)

    @property
    def radial_dim(self) -> int:
        """Dimension ``L * R_max`` of the radial vector (0 without a radial model)."""
        return int(self.radial_mean.size)

    # --- fitting ------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls, geometry: Geometry | CellGeometry, energies: np.ndarray, showers: np.ndarray, *, alpha: float = LOGIT_ALPHA,
        groups: np.ndarray | None = None, radial: bool = False, directions: np.ndarray | None = None,
    ) -> Preprocessor:  # fmt: skip
        """Fit on training showers.

        Args:
            geometry: the readout the showers belong to.
            energies: incident energies ``(N, 1)`` or ``(N,)`` MeV.
            showers: ``(N, voxels)`` MeV.
            alpha: logit offset.
            groups: voxel groups of the energy vector (:func:`~calogen.models.voxel_groups.energy_groups`; default: layers).
            radial: also fit the radial vector (:func:`~calogen.models.voxel_groups.radial_vector`).
            directions: the showers' ``(N, 2)`` ``(theta, phi)``; if all equal, they become the default direction.
        """
        e = np.asarray(energies, dtype=np.float64).reshape(-1, 1)
        v = np.asarray(showers, dtype=np.float64)
        if e.shape[0] < 2 or v.shape[0] != e.shape[0]:
            raise CalogenError(f"preprocessing needs at least 2 showers with matching energies, got {v.shape[0]} and {e.shape[0]}")
        vec = layer_vector(geometry, v, groups)
        energy_scale = _HEADROOM * max(float((vec[:, 0:1] / e).max()), 1e-12)
        voxel_scale = _HEADROOM * max(float((v / e).max()), 1e-12)
        e_min, e_max = float(e.min()), float(e.max())
        if e_max <= e_min:
            e_max = e_min * 1.0001
        stats = dict(
            e_min=e_min, e_max=e_max, energy_scale=energy_scale, voxel_scale=voxel_scale,
            layer_mean=np.zeros(vec.shape[1]), layer_std=np.ones(vec.shape[1]),
            voxel_mean=np.zeros(v.shape[1]), voxel_std=np.ones(v.shape[1]), alpha=alpha,
        )  # fmt: skip
        if directions is not None and (d := check_directions(directions, e.shape[0])).size and np.ptp(d, axis=0).max() <= 1e-6:
            stats.update(theta=float(d[0, 0]), phi=float(d[0, 1]))
        raw = cls(**stats)  # type: ignore[arg-type]
        te = torch.from_numpy(e)
        y = raw.layers_forward(torch.from_numpy(vec), te).numpy()
        x = raw.voxels_forward(torch.from_numpy(v), te).numpy()
        stats.update(
            layer_mean=y.mean(0), layer_std=np.maximum(y.std(0), _MIN_STD_LAYER),
            voxel_mean=x.mean(0), voxel_std=np.maximum(x.std(0), _MIN_STD_VOXEL),
        )  # fmt: skip
        if radial:
            fractions, mask = radial_vector(geometry, v)
            q = _logit(alpha + (1 - 2 * alpha) * torch.from_numpy(fractions)).numpy()
            count = np.maximum(mask.sum(0), 1)
            mean = np.where(mask, q, 0).sum(0) / count
            std = np.sqrt(np.where(mask, (q - mean) ** 2, 0).sum(0) / count)
            stats.update(radial_mean=mean, radial_std=np.maximum(std, _MIN_STD_LAYER))
        return cls(**stats)  # type: ignore[arg-type]

    # --- transforms ---------------------------------------------------------------------------
    @cached_property
    def _tensors(self) -> dict[tuple[str, torch.dtype, torch.device], torch.Tensor]:
        """Statistics converted by :meth:`_t`, kept per name, dtype and device."""
        return {}

    def _t(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """Statistics ``name`` in the dtype and on the device of ``like``: converted once, then kept (constants,
        never inference tensors, so autograd may save them)."""
        key = (name, like.dtype, like.device)
        tensor = self._tensors.get(key)
        if tensor is None:
            with torch.inference_mode(False):
                stats = torch.from_numpy(np.asarray(getattr(self, name), dtype=np.float64))
                tensor = self._tensors[key] = stats.to(dtype=like.dtype, device=like.device)
        return tensor

    def energy_forward(self, energies: torch.Tensor) -> torch.Tensor:
        """Log-scaled incident energy ``(B, 1)`` from MeV ``(B, 1)``."""
        lo, hi = math.log(self.e_min), math.log(self.e_max)
        return (torch.log(energies) - lo) / (hi - lo)

    def condition(self, energies: torch.Tensor, directions: torch.Tensor | None = None, *, conditioned: bool = False) -> torch.Tensor:
        """The networks' condition: the scaled energy ``(B, 1)`` of MeV ``(B, 1)``, followed for a direction-conditioned
        model by :func:`direction_features` of ``directions (B, 2)`` (None: the default direction), ``(B, 4)``."""
        cond = self.energy_forward(energies)
        if not conditioned:
            return cond
        if directions is None:
            directions = torch.tensor([[self.theta, self.phi]], dtype=cond.dtype, device=cond.device).expand(cond.shape[0], 2)
        return torch.cat([cond, direction_features(directions.to(cond.dtype))], dim=1)

    def out_of_range(self, energies: np.ndarray) -> np.ndarray:
        """Boolean mask of energies (MeV) outside the training range (with a 0.1% tolerance)."""
        e = np.asarray(energies, dtype=np.float64)
        return (e < self.e_min * 0.999) | (e > self.e_max * 1.001)

    def layers_forward(self, vec: torch.Tensor, energies: torch.Tensor) -> torch.Tensor:
        """Standardised logit layer vector ``(B, 1 + L)`` from :func:`~calogen.models.voxel_groups.layer_vector` output and MeV ``(B, 1)``."""
        y = torch.cat([vec[:, :1] / (self.energy_scale * energies), vec[:, 1:]], dim=1).clamp(0, 1)
        u = self.alpha + (1 - 2 * self.alpha) * y
        return (_logit(u) - self._t("layer_mean", vec)) / self._t("layer_std", vec)

    def layers_inverse(self, z: torch.Tensor, energies: torch.Tensor) -> torch.Tensor:
        """Per-layer energies ``(B, L)`` in MeV from a standardised layer vector ``(B, 1 + L)``.

        The fractions are clipped at zero and renormalised to sum to one.
        """
        u = sigmoid(z * self._t("layer_std", z) + self._t("layer_mean", z))
        y = ((u - self.alpha) / (1 - 2 * self.alpha)).clamp_min(0)
        total = y[:, :1] * self.energy_scale * energies
        fractions = y[:, 1:]
        fractions = fractions / fractions.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return total * fractions

    def radial_forward(self, fractions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Standardised logit radial vector ``(B, L * R_max)`` from :func:`~calogen.models.voxel_groups.radial_vector` output (0 where ``mask`` is false)."""
        u = self.alpha + (1 - 2 * self.alpha) * fractions.clamp(0, 1)
        z = (_logit(u) - self._t("radial_mean", fractions)) / self._t("radial_std", fractions)
        return torch.where(mask, z, torch.zeros_like(z))

    def radial_inverse(self, z: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
        """Radial fractions ``(B, L, R_max)`` from a standardised radial vector; zero in slots that are not
        ``used (L * R_max,)``, clipped at zero and renormalised to sum 1 in every layer."""
        u = sigmoid(z * self._t("radial_std", z) + self._t("radial_mean", z))
        q = ((u - self.alpha) / (1 - 2 * self.alpha)).clamp_min(0) * used.to(z.dtype)
        n_layers = self.layer_dim - 1
        q = q.reshape(q.shape[0], n_layers, -1)
        return q / q.sum(dim=2, keepdim=True).clamp_min(1e-12)

    def voxels_forward(self, showers: torch.Tensor, energies: torch.Tensor) -> torch.Tensor:
        """Standardised logit voxels ``(B, voxels)`` from MeV showers ``(B, voxels)`` and MeV ``(B, 1)``."""
        u = self.alpha + (1 - 2 * self.alpha) * (showers / (self.voxel_scale * energies)).clamp(0, 1)
        return (_logit(u) - self._t("voxel_mean", showers)) / self._t("voxel_std", showers)

    def voxels_logit(self, z: torch.Tensor) -> torch.Tensor:
        """Logit voxels ``logit(a + (1 - 2a) v / (k_v E))`` ``(B, voxels)`` from standardised ones."""
        return z * self._t("voxel_std", z) + self._t("voxel_mean", z)

    def voxels_from_logit(self, x: torch.Tensor, energies: torch.Tensor) -> torch.Tensor:
        """MeV showers ``(B, voxels)``, clipped at zero, from logit voxels and MeV ``(B, 1)``."""
        return ((sigmoid(x) - self.alpha) / (1 - 2 * self.alpha) * (self.voxel_scale * energies)).clamp_min(0)

    def voxels_inverse(self, z: torch.Tensor, energies: torch.Tensor) -> torch.Tensor:
        """MeV showers ``(B, voxels)``, clipped at zero, from standardised logit voxels."""
        return self.voxels_from_logit(self.voxels_logit(z), energies)

    # --- persistence --------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``preprocessing.json`` and ``preprocessing.safetensors`` into ``directory`` (atomically)."""
        from calogen.train.checkpoint import atomic_write_json, atomic_write_tensors

        directory = Path(directory)
        scalars = {k: getattr(self, k) for k in _SCALARS}
        arrays = {k: torch.from_numpy(np.ascontiguousarray(getattr(self, k), dtype=np.float64)) for k in _ARRAYS}
        atomic_write_tensors(directory / "preprocessing.safetensors", arrays)
        atomic_write_json(directory / "preprocessing.json", scalars)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Preprocessor:
        """Read what :meth:`save` wrote."""
        from safetensors.numpy import load_file

        directory = Path(directory)
        try:
            scalars = json.loads((directory / "preprocessing.json").read_text())
            if not isinstance(scalars, dict) or set(_REQUIRED_SCALARS) - set(scalars) or set(scalars) - set(_SCALARS):
                raise ValueError(f"preprocessing.json must be an object with the keys {list(_REQUIRED_SCALARS)} and optionally {list(_OPTIONAL_SCALARS)}")
            try:
                arrays = load_file(str(directory / "preprocessing.safetensors"))
            except Exception as exc:  # OSError, or safetensors' own error for a damaged file
                raise ValueError(f"preprocessing.safetensors cannot be read: {exc}") from None
            if set(arrays) - set(_ARRAYS) or set(_REQUIRED_ARRAYS) - set(arrays):
                raise ValueError(f"preprocessing.safetensors holds {sorted(arrays)}, expected {list(_REQUIRED_ARRAYS)} and optionally {list(_OPTIONAL_ARRAYS)}")
            return cls(**scalars, **arrays)
        except (OSError, ValueError) as exc:  # CalogenError is a ValueError: the statistics' own checks
            raise CalogenError(f"{directory}: preprocessing files missing or damaged ({exc}); retrain the model or copy it again") from None


_REQUIRED_SCALARS = ("e_min", "e_max", "energy_scale", "voxel_scale", "alpha")
_OPTIONAL_SCALARS = ("theta", "phi")
_SCALARS = _REQUIRED_SCALARS + _OPTIONAL_SCALARS
_REQUIRED_ARRAYS = ("layer_mean", "layer_std", "voxel_mean", "voxel_std")
_OPTIONAL_ARRAYS = ("radial_mean", "radial_std")
_ARRAYS = _REQUIRED_ARRAYS + _OPTIONAL_ARRAYS
