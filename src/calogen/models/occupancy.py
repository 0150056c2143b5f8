"""Occupancy: how many voxels of each ring are hit, and what each hit holds.

The shape network alone spreads a ring's energy over too many voxels: the shipped cpu-small model made
about 760 hits per DS2 shower (MC: 620), 190 of them below 0.3 MeV where the MC has 4, because a MIP
in the sensitive layer deposits far more than the threshold. The occupancy stage replaces the
threshold cut of :func:`~calogen.models.rescale.cut_and_rescale` when a model has one:

1. **Counts.** :class:`HitCountNet` gives, for every ring ``g`` (one radial bin of one layer), a
   categorical distribution over its number of hits ``k_g`` in ``0..max_count``, given the generated
   ring energies of the shower and its incident energy. One residual MLP is shared by all layers; each
   row is one layer's ``R`` ring energies (``log1p(T / t) / 10``, ``t`` the threshold), modulated by the
   incident energy and a learned layer embedding. ``k_g`` is drawn by inverse CDF from a uniform
   ``u = Phi(z)`` of an explicit standard-normal noise ``z``, over the counts that are possible:
   ``k = 0`` for an empty ring, else ``1 <= k <= min(size_g, T_g / t)``.
2. **Placement.** :func:`~calogen.models.hit_placement.keep_largest` keeps exactly the ``k_g`` voxels of each ring with the largest
   shape-network logits, or (``placement: sampled``) with the largest logits plus :func:`~calogen.models.hit_placement.gumbel` noise: ``k_g``
   voxels drawn without replacement with probabilities ``~ exp(logit)``, so the hits move from shower to shower.
3. **Energies.** :func:`~calogen.models.hit_placement.occupy` gives each kept voxel ``f_g + (T_g - k_g f_g) w_i / sum_g w`` with
   ``w_i = sigmoid(x_i)^gamma`` (``x_i`` the voxel's logit; ``gamma < 1`` narrows the spread of the
   shape network's values) and ``f_g = min(floor, T_g / k_g)``, so every ring sums exactly to
   ``T_g`` (to float rounding) and every kept voxel holds at least the threshold. ``gamma`` and
   ``floor`` are fitted to the training showers' voxel-energy spectrum; the floor may depend on the
   incident energy (piecewise linear in ``ln E`` between nodes, constant outside them): low-energy
   showers need a higher one. The spread of the logits grows with the number of shape-network
   evaluations, so ``gamma`` and the floor are fitted per solver (``spectra``, keyed ``"euler:4"``);
   :meth:`Occupancy.for_solver` picks them, and a solver without its own uses the default pair.
4. **Centres** (``OccupancyConfig.centre``, on in new fits of cylindrical geometries). ``gamma < 1`` also
   pulls each ring's centre of energy toward the ring's centre (a DS2 model at 15 degrees: layer 2's offset
   0.70 mm from the networks, 0.51 mm after the stage, MC 0.88; docs/directions.md). :func:`~calogen.models.hit_placement.recentre` tilts
   each ring's energy above ``f_g`` linearly in x and y until its centre is that of ``sigmoid(x_i)`` over the
   kept voxels, keeping ``T_g`` and every voxel at least ``f_g``.

The threshold ``t`` is the geometry's readout threshold. A geometry that records every deposit above 0
MeV (the cell geometries) has none, so the stage gets its own (``OccupancyConfig.threshold``, fitted to a low
quantile of the training showers' cell energies): the least energy of a hit, below which a ring is empty.
Rings are then the hexagonal rings of :func:`~calogen.models.voxel_groups.layer_rings`.

Everything is a torch operation on whole batches (sort, gather, scatter, cumsum, erf), so the exported
ONNX graph contains it. A model directory holds it as ``occupancy.json`` (:class:`OccupancyConfig` and
provenance) and ``occupancy.safetensors``; directories without them generate as before.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from calogen.errors import CalogenError
from calogen.geometry import Geometry
from calogen.models.energy import ResidualBlock
from calogen.models.hit_placement import floor_at, gumbel, normal_cdf, occupy, ring_positions
from calogen.models.layers import ConstantCache
from calogen.models.rescale import group_members, readout_targets
from calogen.models.voxel_groups import energy_groups, model_layers, radial_slots

if TYPE_CHECKING:
    from calogen.cell_geometry import CellGeometry

__all__ = [
    "COUNT_SLACK", "OCCUPANCY_FILES", "PLACEMENTS", "HitCountNet", "Occupancy", "OccupancyConfig", "OccupancyError", "load_occupancy",
    "ring_features", "save_occupancy",
]  # fmt: skip

OCCUPANCY_FILES = ("occupancy.json", "occupancy.safetensors")
"""Files of the occupancy stage in a model directory."""

_ENERGY_SCALE = 10.0
"""Ring energies enter the count network as ``log1p(T / threshold) / 10`` (order one up to ~20 TeV / t)."""

PLACEMENTS = ("largest", "sampled")
"""``OccupancyConfig.placement``: keep the ``k`` largest logits of a ring, or draw ``k`` without replacement."""

COUNT_SLACK = 1 + 1e-5
"""``k <= T / (t * COUNT_SLACK)``: float rounding of ``T / k`` can never take a kept voxel below ``t``."""


class OccupancyError(CalogenError):
    """Occupancy settings or files are invalid."""


@dataclass(frozen=True)
class OccupancyConfig:
    """Settings of the occupancy stage.

    Args:
        width, depth: hidden width and residual blocks of :class:`HitCountNet`.
        max_count: largest number of hits per ring (the most alpha bins of any ring).
        gamma: power of the shape network's sigmoid values that share the rest of the ring's energy.
        floor: least energy (MeV) of a kept voxel, when the ring holds enough (at least the threshold is
            used): one value, or one per node of ``floor_energies``.
        floor_energies: incident energies (MeV, increasing) of the floor's nodes; empty with one floor.
        spectra: ``gamma`` and ``floor`` fitted for other solvers, ``{"SAMPLER:NFE": {"gamma": g, "floor": [...]}}``
            (same nodes as ``floor``).
        threshold: least energy (MeV) of a hit: at least the geometry's readout threshold (0: that threshold).
            A geometry read out above 0 MeV (cell geometries) needs a positive one, fitted to the training showers.
        centre: :func:`~calogen.models.hit_placement.recentre` every ring to the shape network's centre of energy after the ``gamma`` flattening
            (which pulls it toward the ring's centre); False (the default of files written without it): not.
        placement: ``"largest"`` keeps the ``k`` voxels of a ring with the largest logits; ``"sampled"`` draws them
            without replacement with probabilities ``~ exp(logit)`` (Gumbel top-k), from one more standard-normal
            noise value per voxel after the count noise (:attr:`Occupancy.noise_dim`).
    """

    width: int = 64
    depth: int = 2
    max_count: int = 16
    gamma: float = 0.5
    floor: tuple[float, ...] = (1.0,)
    floor_energies: tuple[float, ...] = ()
    spectra: dict[str, dict[str, Any]] = field(default_factory=dict)
    threshold: float = 0.0
    centre: bool = False
    placement: str = "largest"

    def __post_init__(self) -> None:
        for name in ("width", "depth", "max_count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OccupancyError(f"occupancy.{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)) or not 0 < self.gamma <= 4:
            raise OccupancyError(f"occupancy.gamma must be a number in (0, 4], got {self.gamma!r}")
        for name in ("floor", "floor_energies"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
                raise OccupancyError(f"occupancy.{name} must be a list of finite numbers, got {value!r}")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        threshold = self.threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (math.isfinite(threshold) and threshold >= 0):
            raise OccupancyError(f"occupancy.threshold must be a finite energy >= 0 MeV, got {threshold!r}")
        object.__setattr__(self, "threshold", float(threshold))
        if not isinstance(self.centre, bool):
            raise OccupancyError(f"occupancy.centre must be true or false, got {self.centre!r}")
        if self.placement not in PLACEMENTS:
            raise OccupancyError(f"occupancy.placement must be one of {PLACEMENTS}, got {self.placement!r}")
        nodes, floors = self.floor_energies, self.floor
        if not floors or min(floors) < 0 or (len(floors) > 1 and len(nodes) != len(floors)) or (len(floors) == 1 and nodes):
            raise OccupancyError(f"occupancy.floor needs values >= 0, one per floor_energies node (or one and no nodes); got {floors}, {nodes}")
        if nodes and (min(nodes) <= 0 or any(b <= a for a, b in zip(nodes, nodes[1:]))):
            raise OccupancyError(f"occupancy.floor_energies must be positive and increasing, got {nodes}")
        if not isinstance(self.spectra, dict):
            raise OccupancyError(f"occupancy.spectra must be a mapping, got {self.spectra!r}")
        for key, spectrum in self.spectra.items():
            if not isinstance(key, str) or not isinstance(spectrum, dict) or set(spectrum) != {"gamma", "floor"}:
                raise OccupancyError(f"occupancy.spectra must map 'SAMPLER:NFE' to {{gamma, floor}}, got {key!r}: {spectrum!r}")
            try:
                self.for_solver_key(key)
            except OccupancyError as exc:
                raise OccupancyError(f"occupancy.spectra[{key!r}]: {exc}") from None

    def for_solver_key(self, key: str) -> OccupancyConfig:
        """These settings with the ``gamma`` and ``floor`` of solver ``key`` (``"euler:4"``), if fitted for it."""
        if key not in self.spectra:
            return self
        spectrum = self.spectra[key]
        return replace(self, gamma=spectrum["gamma"], floor=tuple(spectrum["floor"]), spectra={})


def ring_features(targets: torch.Tensor, threshold: float, slots: torch.Tensor, n_slots: int) -> torch.Tensor:
    """Count-network input ``(B, L * R_max)``: ``T / t`` of every ring in its radial slot, 0 elsewhere."""
    return torch.zeros(targets.shape[0], n_slots, dtype=targets.dtype, device=targets.device).index_copy(1, slots, targets / threshold)


class HitCountNet(nn.Module):
    """Count logits ``(B, L * R, C)`` from ring energies over the threshold ``(B, L * R)`` and incident energies ``(B, 1)`` MeV.

    Rows are layers (``log1p(T / t) / 10`` of its ``R`` rings and of the whole layer), modulated by an
    embedding of ``ln(E_inc / MeV) / 10`` plus a learned layer embedding, as in
    :class:`~calogen.models.radial.RadialNet`.

    Args:
        n_layers, n_r: ``L`` and ``R``.
        n_classes: ``C = max_count + 1``.
        width, depth: hidden width and residual blocks.
    """

    def __init__(self, n_layers: int, n_r: int, n_classes: int, *, width: int, depth: int) -> None:
        super().__init__()
        self.n_layers, self.n_r, self.n_classes = n_layers, n_r, n_classes
        self.embed = nn.Sequential(nn.Linear(1, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU())
        self.layer_embedding = nn.Parameter(0.1 * torch.randn(n_layers, width, device="cpu"))
        self.inp = nn.Linear(n_r + 1, width)
        self.blocks = nn.ModuleList(ResidualBlock(width, width) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, n_r * n_classes)
        self._layer_films = [ConstantCache() for _ in range(depth)]  # the layer embeddings' scale-and-shift terms

    def forward(self, features: torch.Tensor, energies: torch.Tensor) -> torch.Tensor:
        b, n_l, n_r = features.shape[0], self.n_layers, self.n_r
        rows = features.reshape(b * n_l, n_r)
        layer = rows.sum(dim=1, keepdim=True)
        h = self.inp(torch.log1p(torch.cat([rows, layer], dim=1)) / _ENERGY_SCALE)
        emb = self.embed(torch.log(energies) / _ENERGY_SCALE)
        for block, cache in zip(self.blocks, self._layer_films, strict=True):
            layer_film = cache.get(partial(F.linear, self.layer_embedding, block.film.weight), self.layer_embedding, block.film.weight)
            film = block.film(emb)[:, None, :] + layer_film
            h = block.modulated(h, film.reshape(b * n_l, -1))
        return self.out(F.silu(self.norm(h))).reshape(b, n_l * n_r, self.n_classes)


class Occupancy(nn.Module):
    """The occupancy stage for one geometry: counts from ring energies, then :func:`~calogen.models.hit_placement.occupy`.

    ``forward(logits (B, voxels), targets (B, G) MeV, energies (B, 1) MeV, noise (B, noise_dim)) -> (B, voxels) MeV``.

    Args:
        geometry: the readout; groups are its rings (:func:`~calogen.models.voxel_groups.energy_groups`).
        config: settings.
    """

    def __init__(self, geometry: Geometry | CellGeometry, config: OccupancyConfig) -> None:
        super().__init__()
        self.geometry, self.threshold = geometry, max(float(geometry.threshold), config.threshold)
        if self.threshold <= 0:
            raise OccupancyError("the occupancy stage needs a positive threshold: the geometry's readout has none, so set occupancy.threshold (MeV)")
        self.configure(config)
        groups = energy_groups(geometry, "rings")
        slots, n_r = radial_slots(geometry)
        n_layers = len(model_layers(geometry))
        self.n_groups, self.n_slots = int(groups.max()) + 1, n_layers * n_r
        self.net = HitCountNet(n_layers, n_r, config.max_count + 1, width=config.width, depth=config.depth)
        members = group_members(groups)
        self.register_buffer("groups", torch.from_numpy(groups.astype(np.int64)), persistent=False)
        self.register_buffer("members", torch.from_numpy(members), persistent=False)
        self.register_buffer("slots", torch.from_numpy(slots), persistent=False)
        self.register_buffer("sizes", torch.from_numpy(np.bincount(groups)), persistent=False)
        self.register_buffer("positions", torch.from_numpy(ring_positions(geometry)), persistent=False)

    def for_solver(self, sampler: str, nfe: int) -> Occupancy:
        """This stage with the spectrum settings fitted for the shape network's ``sampler`` at ``nfe`` (network shared)."""
        key = f"{sampler}:{nfe}"
        if key not in self.config.spectra:
            return self
        view = copy.copy(self)
        view._buffers = dict(self._buffers)  # configure() replaces the floor buffers of the view only
        view.configure(replace(self.config.for_solver_key(key), spectra=self.config.spectra))
        return view

    def configure(self, config: OccupancyConfig) -> None:
        """Use ``config`` (its network settings must stay those the network was built with)."""
        self.config = config
        nodes = [math.log(e) for e in config.floor_energies] or [0.0, 1.0]  # one floor: two equal nodes
        values = config.floor if config.floor_energies else 2 * config.floor
        self.register_buffer("floor_values", torch.tensor(values), persistent=False)
        self.register_buffer("floor_log_energies", torch.tensor(nodes), persistent=False)

    def floor_at_energies(self, energies: torch.Tensor) -> torch.Tensor:
        """The configured floor ``(B, 1)`` MeV at incident energies ``(B, 1)`` MeV (:func:`~calogen.models.hit_placement.floor_at`)."""
        return floor_at(energies, self.floor_values.to(energies.dtype), self.floor_log_energies.to(energies.dtype))

    def logits(self, targets: torch.Tensor, energies: torch.Tensor) -> torch.Tensor:
        """Count logits ``(B, G, C)`` of every ring (before the possible-count mask)."""
        features = ring_features(targets, self.threshold, self.slots, self.n_slots)
        return self.net(features, energies).index_select(1, self.slots)

    def largest(self, targets: torch.Tensor) -> torch.Tensor:
        """Largest possible count ``(B, G)`` (float) of every ring: 0 if empty, else ``max(1, min(size, T / t, max_count))``."""
        most = torch.minimum(torch.floor(targets / (self.threshold * COUNT_SLACK)), self.sizes.to(targets.dtype))
        return torch.where(targets > 0, most.clamp(1, self.config.max_count), torch.zeros_like(targets))

    def possible(self, targets: torch.Tensor, largest: torch.Tensor | None = None) -> torch.Tensor:
        """Boolean ``(B, G, C)``: counts a ring can have (0 iff empty; at most its size and ``T / t``), given
        :meth:`largest` if already computed."""
        largest = self.largest(targets) if largest is None else largest
        k = torch.arange(self.config.max_count + 1, device=targets.device, dtype=targets.dtype)
        return (k <= largest[:, :, None]) & ((k > 0) == (targets > 0)[:, :, None])

    @property
    def noise_parts(self) -> tuple[int, ...]:
        """Sizes of the parts of the stage's standard-normal noise per shower: one value per ring (its count), then
        for ``"sampled"`` placement one per voxel."""
        return (self.n_groups, self.groups.shape[0]) if self.config.placement == "sampled" else (self.n_groups,)

    @property
    def noise_dim(self) -> int:
        """Standard-normal noise values per shower (the sum of :attr:`noise_parts`)."""
        return sum(self.noise_parts)

    def counts(self, targets: torch.Tensor, energies: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Hits ``(B, G)`` (integer-valued, float) drawn from the possible counts by inverse CDF of ``Phi(noise)``."""
        largest = self.largest(targets)
        logits = self.logits(targets, energies).to(targets.dtype).masked_fill(~self.possible(targets, largest), -torch.inf)
        cdf = torch.softmax(logits, dim=2).cumsum(dim=2)
        u = normal_cdf(noise)
        drawn = (cdf < u[:, :, None] * cdf[:, :, -1:]).sum(dim=2).to(targets.dtype)
        return torch.minimum(drawn, largest)  # rounding can leave u above the last step of the CDF: the largest count then

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, energies: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        targets = readout_targets(targets, self.threshold)
        counts = self.counts(targets, energies, noise[:, : self.n_groups])
        c = self.config
        floor = self.floor_at_energies(energies.to(targets.dtype))
        scores = logits + gumbel(noise[:, self.n_groups :]) if c.placement == "sampled" else None
        return occupy(logits, targets, counts, self.groups, self.members, threshold=self.threshold, floor=floor, gamma=c.gamma,
                      positions=self.positions if c.centre else None, scores=scores)  # fmt: skip


# --- files --------------------------------------------------------------------------------------
def save_occupancy(directory: str | os.PathLike[str], occupancy: Occupancy, provenance: dict[str, Any]) -> None:
    """Write ``occupancy.json`` (settings and provenance) and ``occupancy.safetensors`` into a model directory."""
    from calogen.train.checkpoint import atomic_write_json, atomic_write_tensors

    directory = Path(directory)
    atomic_write_tensors(directory / OCCUPANCY_FILES[1], occupancy.net.state_dict())
    atomic_write_json(directory / OCCUPANCY_FILES[0], {"occupancy": asdict(occupancy.config), "provenance": provenance})


def load_occupancy(directory: str | os.PathLike[str], geometry: Geometry) -> Occupancy | None:
    """The occupancy stage of a model directory, or None if it has none.

    Raises:
        OccupancyError: its files are incomplete, damaged or do not fit the geometry.
    """
    import json

    from safetensors import safe_open

    directory = Path(directory)
    present = [(directory / name).is_file() for name in OCCUPANCY_FILES]
    if not any(present):
        return None
    if not all(present):
        raise OccupancyError(f"{directory}: needs both {' and '.join(OCCUPANCY_FILES)} or neither; copy the model again or refit")
    try:
        meta = json.loads((directory / OCCUPANCY_FILES[0]).read_text())
        settings = meta["occupancy"]
        unknown = set(settings) - {f.name for f in fields(OccupancyConfig)}
        if unknown:
            raise OccupancyError(f"{directory}/{OCCUPANCY_FILES[0]}: unknown settings {sorted(unknown)} (written by a newer calogen?)")
        config = OccupancyConfig(**settings)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OccupancyError(f"{directory}/{OCCUPANCY_FILES[0]} cannot be read ({exc}); refit the occupancy stage") from None
    occupancy = Occupancy(geometry, config)
    try:
        with safe_open(str(directory / OCCUPANCY_FILES[1]), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        occupancy.net.load_state_dict(state)
    except Exception as exc:  # OSError, safetensors' error, or a shape mismatch (RuntimeError)
        raise OccupancyError(f"{directory}/{OCCUPANCY_FILES[1]} does not fit {OCCUPANCY_FILES[0]} ({str(exc).splitlines()[0]}); refit") from None
    if not all(bool(torch.isfinite(v).all()) for v in state.values()):
        raise OccupancyError(f"{directory}/{OCCUPANCY_FILES[1]} holds NaN or inf; refit the occupancy stage")
    return occupancy.eval().requires_grad_(False)
