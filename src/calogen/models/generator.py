"""A trained model as a :class:`~calogen.generator.Generator`, and the model directory format.

Generation runs in stages: the energy model samples the standardised layer-energy vector given the
scaled incident energy; the radial model, if there is one, samples how each layer's energy splits over
its radial bins given both; the shape model samples standardised voxels given the energy and the layer
vector. The voxels are mapped back to MeV, clipped at zero, cut at the geometry's threshold and rescaled
per layer (or per ring, with a radial model or ``energy_groups: rings``) so every group sums exactly to
its generated energy, without losing groups the cut left empty (:func:`cut_and_rescale`).
:class:`Pipeline` is that whole computation as one ``nn.Module`` with an unrolled sampler and explicit
noise inputs — the module that ONNX export traces.

A model directory holds ``config.json`` (format, geometry, model and training configuration),
``weights.safetensors`` (``ema.*`` and ``raw.*`` parameters), ``preprocessing.json`` +
``preprocessing.safetensors`` and ``history.jsonl``. Nothing in it is code.

Example:
    >>> model = load("runs/tiny")                                        # doctest: +SKIP
    >>> showers = model.sample(np.full(10, 5e3), seed=1, nfe=4)          # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from calogen.errors import CalogenError
from calogen.generator import derive_seed
from calogen.geometry import Geometry, Layer
from calogen.models.config import ModelConfig
from calogen.models.edm import EDM
from calogen.models.energy import EnergyNet
from calogen.models.flow_matching import Denoiser, FlowMatching
from calogen.models.preprocess import Preprocessor, energy_groups, radial_slots, radial_used
from calogen.models.radial import RadialNet
from calogen.models.samplers import solve, steps_for_nfe
from calogen.models.unet import ShapeNet

__all__ = ["FlowModel", "ModelError", "ModelPair", "Pipeline", "cut_and_rescale", "group_totals", "load", "rescale_layers", "save_model"]

FORMAT = "calogen-model"
VERSION = 1

EVALUATION_CHUNK = 256
"""Most showers the networks see at once. On one CPU core the shipped cpu-small model at 4 NFE took
9.9-10.8 ms/shower in whole batches of 1000 and 6.5-8.4 ms/shower in chunks of 128-256, whose
activations fit in cache."""


class ModelError(CalogenError):
    """A model directory is missing, incomplete or incompatible."""


def _wrap(net: nn.Module, config: ModelConfig) -> Denoiser:
    if config.objective == "edm":
        return EDM(net)
    return FlowMatching(net, time_sampling=config.time_sampling)


class ModelPair(nn.Module):
    """The energy, radial (optional) and shape denoisers, trained together.

    Args:
        geometry: the readout.
        config: architecture.
        layer_dim: size ``1 + L`` of the layer-energy vector.
    """

    def __init__(self, geometry: Geometry, config: ModelConfig, layer_dim: int) -> None:
        super().__init__()
        self.config = config
        self.energy = _wrap(EnergyNet(layer_dim, 1, width=config.energy_width, depth=config.energy_depth), config)
        self.radial: Denoiser | None = None
        if config.radial_width:
            n_r = radial_slots(geometry)[1]
            net = RadialNet(layer_dim - 1, n_r, 1 + layer_dim, width=config.radial_width, depth=config.radial_depth)
            self.radial = _wrap(net, config)
        shape = ShapeNet(
            geometry, 1 + layer_dim, channels=config.channels, attention_levels=config.attention_levels,
            compress_layers=config.compress_layers, emb_dim=config.emb_dim,
        )  # fmt: skip
        self.shape = _wrap(shape, config)

    def forward(
        self,
        cond: torch.Tensor,
        layers: torch.Tensor,
        radial: torch.Tensor | None,
        voxels: torch.Tensor,
        generator: torch.Generator | None = None,
        energy_batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample losses of the energy, radial (zero without one) and shape models.

        Args:
            cond: scaled incident energy ``(B, 1)``.
            layers: standardised layer vector ``(B, 1 + L)`` (the reference one: teacher forcing).
            radial: standardised radial vector ``(B, L * R)``, or None without a radial model.
            voxels: standardised voxels ``(B, voxels)``.
            generator: source of the training noise.
            energy_batch: ``(cond, layers, radial)`` of a separate, usually larger batch for the energy
                and radial models (default: the same showers).
        """
        e_cond, e_layers, e_radial = energy_batch if energy_batch is not None else (cond, layers, radial)
        loss_energy = self.energy.loss(e_layers, e_cond, generator)
        loss_radial = torch.zeros(1, device=cond.device)
        if self.radial is not None and e_radial is not None:
            loss_radial = self.radial.loss(e_radial, torch.cat([e_cond, e_layers], dim=1), generator)
        loss_shape = self.shape.loss(voxels, torch.cat([cond, layers], dim=1), generator)
        return loss_energy, loss_radial, loss_shape


def group_totals(showers: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Sum ``(B, G)`` of ``showers (B, voxels)`` over the voxels of each group (``groups (voxels,)`` int64)."""
    index = groups.expand(showers.shape[0], -1)
    return torch.zeros(showers.shape[0], n_groups, dtype=showers.dtype, device=showers.device).scatter_add(1, index, showers)


def rescale_layers(showers: torch.Tensor, layer_energies: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Scale each group (layer or ring) of ``showers`` so it sums to ``layer_energies``.

    ``v_i <- v_i * E_g / sum_{j in g} v_j`` for voxels ``i`` of group ``g``; a group that is all zero stays zero.

    Args:
        showers: ``(B, voxels)`` non-negative MeV.
        layer_energies: ``(B, G)`` MeV.
        groups: ``(voxels,)`` int64 group of every voxel.
    """
    sums = group_totals(showers, groups, layer_energies.shape[1])
    scale = torch.where(sums > 0, layer_energies / sums.clamp_min(torch.finfo(sums.dtype).tiny), torch.zeros_like(sums))
    return showers * scale[:, groups]


def cut_and_rescale(raw: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor, threshold: float) -> torch.Tensor:
    """Showers from raw voxels ``(B, voxels)`` MeV: cut at ``threshold``, every group rescaled to ``targets (B, G)``.

    A group left empty by the cut is first filled from the fourth powers of its raw values (relative to
    its raw sum, so nothing over- or underflows in float32 however small they are), which puts its energy
    on its largest voxels, and then cut; it stays empty only if no voxel reaches the threshold even then.
    """
    n_groups = targets.shape[1]
    showers = torch.where(raw >= threshold, raw, torch.zeros_like(raw))
    empty = (group_totals(showers, groups, n_groups) <= 0)[:, groups]
    raw_sums = group_totals(raw, groups, n_groups)[:, groups]
    rescue = (raw / raw_sums.clamp_min(torch.finfo(raw.dtype).tiny)) ** 4
    showers = rescale_layers(torch.where(empty, rescue, showers), targets, groups)
    showers = torch.where(showers >= threshold, showers, torch.zeros_like(showers))
    return rescale_layers(showers, targets, groups)


class Pipeline(nn.Module):
    """The whole generator with a fixed, unrolled sampler and explicit noise.

    ``forward(energies (B, 1) MeV, noise_energy (B, 1 + L [+ L * R]), noise_shape (B, voxels)) -> (B, voxels) MeV``,
    float32, no randomness inside; traceable with a dynamic batch dimension. With a radial model the
    energy noise also holds the radial network's noise, and voxels are rescaled to ring energies.

    Args:
        pair: the (EMA) denoisers.
        preprocessor: fitted preprocessing.
        geometry: the readout (group membership and threshold).
        sampler, nfe: the ODE solver and its number of shape-network evaluations.
        energy_sampler, energy_nfe: the same for the energy network (default: ``sampler``, ``nfe``).
    """

    def __init__(
        self, pair: ModelPair, preprocessor: Preprocessor, geometry: Geometry, *, sampler: str, nfe: int,
        energy_sampler: str | None = None, energy_nfe: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.pair, self.preprocessor = pair, preprocessor
        self.sampler, self.nfe = sampler, nfe
        self.energy_sampler, self.energy_nfe = energy_sampler or sampler, energy_nfe or nfe
        self.threshold = float(geometry.threshold)
        self.energy_schedule = pair.energy.schedule(steps_for_nfe(self.energy_sampler, self.energy_nfe)[0]).tolist()
        self.shape_schedule = pair.shape.schedule(steps_for_nfe(sampler, nfe)[0]).tolist()
        groups = energy_groups(geometry, "rings" if pair.radial is not None else pair.config.energy_groups)
        if pair.radial is not None:
            self.register_buffer("radial_slots", torch.from_numpy(radial_slots(geometry)[0]), persistent=False)
            self.register_buffer("radial_used", torch.from_numpy(radial_used(geometry)), persistent=False)
        self.register_buffer("groups", torch.from_numpy(groups.astype(np.int64)), persistent=False)

    def forward(self, energies: torch.Tensor, noise_energy: torch.Tensor, noise_shape: torch.Tensor) -> torch.Tensor:
        pre = self.preprocessor
        cond = pre.energy_forward(energies)
        noise_layers = noise_energy[:, : pre.layer_dim]
        layers = solve(self.pair.energy, self.pair.energy.prior(noise_layers), self.energy_schedule, cond=cond,
                       sampler=self.energy_sampler, nfe=self.energy_nfe)  # fmt: skip
        shape_cond = torch.cat([cond, layers], dim=1)
        voxels = solve(self.pair.shape, self.pair.shape.prior(noise_shape), self.shape_schedule, cond=shape_cond,
                       sampler=self.sampler, nfe=self.nfe)  # fmt: skip
        targets = pre.layers_inverse(layers, energies)
        if self.pair.radial is not None:
            noise_radial = noise_energy[:, pre.layer_dim :]
            radial = solve(self.pair.radial, self.pair.radial.prior(noise_radial), self.energy_schedule, cond=shape_cond,
                           sampler=self.energy_sampler, nfe=self.energy_nfe)  # fmt: skip
            rings = targets[:, :, None] * pre.radial_inverse(radial, self.radial_used)
            targets = rings.flatten(1)[:, self.radial_slots]
        return cut_and_rescale(pre.voxels_inverse(voxels, energies), targets, self.groups, self.threshold)


# --- the model directory ------------------------------------------------------------------------
def geometry_to_dict(geometry: Geometry) -> dict[str, Any]:
    """JSON form of a geometry (every field, so it round-trips exactly)."""
    return {
        "name": geometry.name, "particle": geometry.particle, "pid": geometry.pid, "threshold": geometry.threshold,
        "layers": [{"r_edges": list(x.r_edges), "n_alpha": x.n_alpha, "z_range": list(x.z_range)} for x in geometry.layers],
    }  # fmt: skip


def geometry_from_dict(data: dict[str, Any]) -> Geometry:
    """Inverse of :func:`geometry_to_dict`."""
    layers = tuple(Layer(tuple(x["r_edges"]), int(x["n_alpha"]), tuple(x["z_range"])) for x in data["layers"])  # type: ignore[arg-type]
    return Geometry(data["name"], data["particle"], int(data["pid"]), layers, float(data["threshold"]))


def save_model(
    directory: str | os.PathLike[str],
    *,
    geometry: Geometry,
    config: ModelConfig,
    preprocessor: Preprocessor,
    raw: ModelPair,
    ema: ModelPair,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``config.json``, ``weights.safetensors`` and the preprocessing into ``directory`` (atomically)."""
    from calogen.train.checkpoint import atomic_write_json, atomic_write_tensors

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"ema.{k}": v for k, v in ema.state_dict().items()}
    tensors.update({f"raw.{k}": v for k, v in raw.state_dict().items()})
    atomic_write_tensors(directory / "weights.safetensors", tensors)
    preprocessor.save(directory)
    meta = {
        "format": FORMAT, "version": VERSION, "geometry": geometry_to_dict(geometry), "model": asdict(config),
        "layer_dim": preprocessor.layer_dim, **(extra or {}),
    }  # fmt: skip
    atomic_write_json(directory / "config.json", meta)


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """A :class:`ModelConfig` from its JSON form (lists become tuples)."""
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ModelError(f"model settings {unknown} are unknown to this calogen; the model was written by a newer version")
    return ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def load(path: str | os.PathLike[str], *, weights: str = "ema") -> FlowModel:
    """Load a model directory written by ``calogen train``.

    Args:
        path: the model directory.
        weights: ``ema`` (default) or ``raw`` parameters.
    """
    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise ModelError(f"{directory} is not a model directory (no config.json); train one with `calogen train`")
    try:
        meta = json.loads((directory / "config.json").read_text())
    except ValueError as exc:
        raise ModelError(f"{directory}/config.json is not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ModelError(
            f"{directory}: format {meta.get('format')!r} version {meta.get('version')!r} is not "
            f"{FORMAT!r} version {VERSION}; retrain with this calogen"
        )
    if weights not in ("ema", "raw"):
        raise ModelError(f"weights must be 'ema' or 'raw', got {weights!r}")
    geometry = geometry_from_dict(meta["geometry"])
    config = model_config_from_dict(meta["model"])
    preprocessor = Preprocessor.load(directory)
    if config.radial_width and not preprocessor.radial_dim:
        raise ModelError(f"{directory}: the model has a radial network but no radial preprocessing; retrain it")
    pair = ModelPair(geometry, config, int(meta["layer_dim"]))
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(directory / "weights.safetensors"))
    except Exception as exc:  # OSError, or safetensors' own error for a damaged file
        raise ModelError(f"{directory}/weights.safetensors cannot be read ({exc}); retrain or copy it again") from None
    prefix = f"{weights}."
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        pair.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{directory}: weights do not match config.json ({str(exc).splitlines()[0]})") from None
    pair.eval().requires_grad_(False)
    return FlowModel(directory, geometry, config, preprocessor, pair)


class FlowModel:
    """A trained energy + shape model; a :class:`~calogen.generator.Generator`.

    Shower ``i`` of a call uses noise seeded by ``derive_seed(seed, i)``, so results do not depend on
    ``batch_size`` beyond floating-point rounding. However large the batch, the networks run on at most
    :data:`EVALUATION_CHUNK` showers at a time, so their activations stay in the CPU's caches.

    Attributes:
        geometry: the readout.
        config: architecture.
        nfe, sampler: defaults used when :meth:`sample` is not given them.
        preprocessor: fitted preprocessing (its ``e_min``, ``e_max`` give the training range).
    """

    def __init__(self, directory: Path, geometry: Geometry, config: ModelConfig, preprocessor: Preprocessor, pair: ModelPair) -> None:
        self.directory = directory
        self.geometry, self.config, self.preprocessor, self.pair = geometry, config, preprocessor, pair
        self.nfe, self.sampler = config.nfe, config.sampler

    def using(self, *, nfe: int | None = None, sampler: str | None = None) -> FlowModel:
        """A view of this model whose default NFE and sampler are replaced (weights shared)."""
        view = copy.copy(self)
        view.nfe, view.sampler = nfe or self.nfe, sampler or self.sampler
        steps_for_nfe(view.sampler, view.nfe)
        return view

    def noise_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-shower shapes of the noise inputs of :meth:`export_module` (standard normal, float32)."""
        return {"noise_energy": (self._energy_noise_dim,), "noise_shape": (self.geometry.n_voxels,)}

    @property
    def _energy_noise_dim(self) -> int:
        return self.preprocessor.layer_dim + (self.preprocessor.radial_dim if self.pair.radial is not None else 0)

    def export_module(self, nfe: int, sampler: str = "euler") -> Pipeline:
        """The generator as an ``nn.Module`` ``(energies (B, 1), noise_energy, noise_shape) -> (B, voxels)``.

        ``nfe`` and ``sampler`` apply to the shape network; the energy network uses the configured
        ``energy_nfe`` and ``energy_sampler`` if set.
        """
        steps_for_nfe(sampler, nfe)
        return Pipeline(
            self.pair, self.preprocessor, self.geometry, sampler=sampler, nfe=nfe,
            energy_sampler=self.config.energy_sampler, energy_nfe=self.config.energy_nfe,
        ).eval()  # fmt: skip

    def draw_noise(self, n: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Standard-normal noise for ``n`` showers: energy ``(n, 1 + L [+ L * R])`` and shape ``(n, voxels)``, float32."""
        d_e, d_s = self._energy_noise_dim, self.geometry.n_voxels
        out = np.empty((n, d_e + d_s), dtype=np.float32)
        for i in range(n):
            gen = torch.Generator().manual_seed(derive_seed(seed, i))
            out[i] = torch.randn(d_e + d_s, generator=gen).numpy()
        return out[:, :d_e], out[:, d_e:]

    def sample_with_noise(
        self, energies: np.ndarray, noise_energy: np.ndarray, noise_shape: np.ndarray, nfe: int | None = None,
        *, sampler: str | None = None, batch_size: int | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Showers ``(N, voxels)`` float32 MeV for energies ``(N,)`` MeV and given noise; same as :meth:`export_module`."""
        e = self._energies(energies)
        module = self.export_module(nfe or self.nfe, sampler or self.sampler)
        batch = min(batch_size or EVALUATION_CHUNK, EVALUATION_CHUNK)
        out = np.empty((e.shape[0], self.geometry.n_voxels), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, e.shape[0], batch):
                sl = slice(s, s + batch)
                args = (torch.from_numpy(e[sl]), torch.as_tensor(noise_energy[sl]), torch.as_tensor(noise_shape[sl]))
                out[sl] = module(*(a.float() for a in args)).numpy()
        return out

    def sample(
        self, energies: np.ndarray, *, seed: int, batch_size: int | None = None, nfe: int | None = None, sampler: str | None = None
    ) -> np.ndarray:
        """Showers ``(N, voxels)`` float32 MeV for incident energies ``(N,)`` or ``(N, 1)`` MeV.

        Energies outside the training range give a :class:`UserWarning` (the model extrapolates).
        """
        e = self._energies(energies)
        outside = int(self.preprocessor.out_of_range(e).sum())
        if outside:
            warnings.warn(
                f"{outside} of {e.shape[0]} energies lie outside the training range "
                f"[{self.preprocessor.e_min:.4g}, {self.preprocessor.e_max:.4g}] MeV; the model extrapolates",
                UserWarning,
                stacklevel=2,
            )
        noise_energy, noise_shape = self.draw_noise(e.shape[0], seed=seed)
        return self.sample_with_noise(e, noise_energy, noise_shape, nfe, sampler=sampler, batch_size=batch_size)

    def _energies(self, energies: np.ndarray) -> np.ndarray:
        e = np.asarray(energies, dtype=np.float32).reshape(-1, 1)
        if not np.isfinite(e).all() or (e <= 0).any():
            raise CalogenError("incident energies must be finite and > 0 MeV")
        return e
