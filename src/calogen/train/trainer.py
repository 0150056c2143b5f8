"""One training process's state: the model, its EMA copy and the optimiser, with the step, validation,
learning-rate and state functions the training loop (:mod:`calogen.train.loop`) calls.

The global batch of a step is split into ``shards`` equal parts (shard ``k``: every ``shards``-th shower
from the ``k``-th, and likewise for the energy models' rows); shard ``k`` of step ``s`` draws its training
noise from ``derive_seed(seed, s shards + k)``, and the loss is the mean of the shards' mean losses, which
is the mean over the global batch. With ``WORLD_SIZE`` > 1 (``torchrun``) the model is wrapped in
DistributedDataParallel and process ``r`` of ``world`` takes the consecutive shards
``r shards / world ... (r + 1) shards / world - 1``, accumulating their gradients; DDP averages the
processes' gradients, so every process applies the gradient of the whole global batch, and a run with
``shards`` = K gives the same weights on 1, K or any divisor of K processes (up to the order of float
sums). ``shards`` defaults to the number of processes. The energy models' batches are drawn from a seeded
generator, so a resumed run continues exactly as an uninterrupted one. On a CUDA machine the networks
run under bf16 autocast.

Learning rate at step ``s``: ``lr (s + 1) / warmup`` during warm-up, then
``lr (m + (1 - m) (1 + cos(pi p)) / 2)`` with ``p`` the fraction of the remaining steps done.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from calogen.errors import CalogenError
from calogen.generator import derive_seed
from calogen.geometry import Geometry
from calogen.io import ShowerData
from calogen.models.pair import ModelPair
from calogen.models.preprocess import Preprocessor
from calogen.models.voxel_groups import energy_groups, layer_vector, radial_vector
from calogen.train.checkpoint import optimizer_from_flat, optimizer_to_flat
from calogen.train.config import Preset
from calogen.train.data import BlockLoader, SourcePool
from calogen.train.one_step import build_bank, fit_one_step

__all__ = ["Dist", "Trainer", "check_shards", "device_for"]


@dataclass(frozen=True)
class Dist:
    """This process's ``rank`` among ``world`` training processes; the collective operations do nothing
    in a single process."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Dist:
        """The processes ``torchrun`` started (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``): joins their process
        group (NCCL on CUDA, else gloo) unless already joined."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as tdist

        if not tdist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            tdist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(tdist.get_rank(), world)

    @property
    def main(self) -> bool:
        """Whether this process writes files and logs (rank 0)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process arrives here."""
        if self.world > 1:
            torch.distributed.barrier()

    def broadcast_(self, tensors: Iterable[torch.Tensor]) -> None:
        """Overwrite ``tensors`` in place with rank 0's."""
        if self.world > 1:
            for t in tensors:
                torch.distributed.broadcast(t, 0)

    def mean_(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` replaced in place by its mean over the processes; returned."""
        if self.world > 1:
            torch.distributed.all_reduce(tensor)
            tensor.div_(self.world)
        return tensor


class Trainer:
    """Model, EMA copy and optimiser, with one-step, validation and state functions.

    Args:
        geometry: the readout.
        preset: model and training configuration.
        preprocessor: fitted preprocessing.
        device: where to train.
        dist: process rank and count.
        shards: parts of the global batch with their own noise (see the module docstring); a multiple of
            ``dist.world`` dividing ``train.batch_size`` and ``train.energy_batch_size`` (default: ``dist.world``).
        teacher: the flow-matching model a student (``model.objective`` consistency or average-velocity) starts
            from and distils (:meth:`~calogen.models.pair.ModelPair.start_from`), or a refiner starts from.
        source: a refiner's FastSim showers.
    """

    def __init__(
        self, geometry: Geometry, preset: Preset, preprocessor: Preprocessor, *, device: torch.device | None = None,
        dist: Dist | None = None, shards: int | None = None, teacher: ModelPair | None = None, source: SourcePool | None = None,
    ) -> None:  # fmt: skip
        self.geometry, self.preset, self.pre = geometry, preset, preprocessor
        if preset.model.radial_width and not preprocessor.radial_dim:
            raise CalogenError("the model has a radial network but the preprocessing was fitted without radial=True")
        self.device = device or torch.device("cpu")
        self.dist = dist or Dist()
        self.shards = shards or self.dist.world
        check_shards(preset, self.shards, self.dist.world)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(preset.train.seed)
            self.raw = ModelPair(geometry, preset.model, preprocessor.layer_dim).to(self.device)
        self.ema = copy.deepcopy(self.raw).requires_grad_(False).eval()
        self.teacher, self.source = teacher, source
        if preset.model.objective == "refiner" and source is None:
            raise CalogenError("a refiner trains on FastSim showers paired with the data: give --source FAST.h5")
        if teacher is not None:  # a student: both copies start as the teacher, and both distil it (EMA: validation)
            teacher = teacher.to(self.device)
            mapped = frozenset({"energy", "radial"} if preset.train.one_step_steps else ())  # regressed before the loop (fit_energy_maps)
            kept = frozenset({"energy", "radial"} if preset.model.objective == "refiner" else ())  # a refiner keeps the teacher's
            frozen = mapped | kept  # not trained by the loop
            for pair in (self.raw, self.ema):
                pair.start_from(teacher, skip=mapped)
                pair.loop_networks -= frozen
                for name, denoiser in pair.denoisers().items():
                    denoiser.requires_grad_(name not in frozen and pair is self.raw)
        self.model: torch.nn.Module = self.raw
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(self.raw, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            self.dist.broadcast_(self.ema.state_dict().values())  # DDP gave every process rank 0's raw weights
        cfg = preset.train
        self.params = [p for p in self.raw.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.autocast = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.groups = energy_groups(geometry, preset.model.energy_groups)
        self.energy_pool: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None

    def set_energy_pool(self, loader: BlockLoader) -> None:
        """Hold the scaled energy, standardised layer vector (and radial vector) of every training shower,
        from which the energy and radial models draw ``train.energy_batch_size`` rows per step."""
        parts = [self.energy_tensors(block) for block in loader.train_blocks_data()]
        radial = torch.cat([p[2] for p in parts]) if parts[0][2] is not None else None  # type: ignore[misc]
        self.energy_pool = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), radial)

    def _energy_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
        """The energy and radial models' rows of step ``step`` (all shards'); None when they take the step's showers or
        the loop does not train them."""
        size = self.preset.train.energy_batch_size
        if self.energy_pool is None or size is None or not self.raw.loop_networks & {"energy", "radial"}:
            return None
        n = self.energy_pool[0].shape[0]
        rows = np.random.default_rng([self.preset.train.seed, 2, step]).integers(0, n, size)
        index = torch.from_numpy(rows).to(self.device)
        cond, layers, radial = self.energy_pool
        return cond[index], layers[index], None if radial is None else radial[index]

    def fit_energy_maps(self, log: Callable[[dict[str, float]], None] | None = None, progress: bool = False) -> None:
        """A student's one-step energy and radial networks, regressed on a bank of the teacher's solves
        (:mod:`calogen.train.one_step`; needs :meth:`set_energy_pool`); the EMA copy gets the same weights.

        Every process runs the same seeded regression; rank 0's result is then broadcast, so kernels that are not
        bitwise reproducible cannot leave the processes with different networks."""
        if self.teacher is None or self.energy_pool is None:
            raise CalogenError("the one-step energy stage needs a teacher and the training showers' energies")
        bank = build_bank(self.teacher, self.energy_pool[0], self.preset.train.bank_size, self.preset.train.seed)
        fit_one_step(self.raw, bank, self.preset.train, log=log, progress=progress)
        for name in ("energy", "radial"):
            if getattr(self.raw, name) is not None:
                self.dist.broadcast_(getattr(self.raw, name).state_dict().values())
                getattr(self.ema, name).load_state_dict(getattr(self.raw, name).state_dict())

    def lr_at(self, step: int) -> float:
        """Learning rate of step ``step`` (see the module docstring)."""
        cfg = self.preset.train
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        p = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))

    def energy_tensors(self, data: ShowerData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Condition ``(B, 1)`` (scaled energy; ``(B, 4)`` with the direction features), standardised layer vector
        ``(B, 1 + L)`` and radial vector ``(B, L * R)`` (None without a radial model)."""
        e = torch.from_numpy(data.energies.astype(np.float64))
        vec = torch.from_numpy(layer_vector(self.geometry, data.showers, self.groups))
        directions = None if data.directions is None else torch.from_numpy(data.directions.astype(np.float64))
        out = [self.pre.condition(e, directions, conditioned=self.preset.model.directions), self.pre.layers_forward(vec, e)]
        if self.preset.model.radial_width:
            fractions, mask = radial_vector(self.geometry, data.showers)
            out.append(self.pre.radial_forward(torch.from_numpy(fractions), torch.from_numpy(mask)))
        cond, layers, *radial = (t.to(self.device, torch.float32) for t in out)
        return cond, layers, radial[0] if radial else None

    def tensors(self, data: ShowerData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """:meth:`energy_tensors` and the standardised voxels ``(B, voxels)``."""
        e = torch.from_numpy(data.energies.astype(np.float64))
        x = self.pre.voxels_forward(torch.from_numpy(data.showers.astype(np.float64)), e)
        return (*self.energy_tensors(data), x.to(self.device, torch.float32))

    def source_tensor(self, data: ShowerData, voxels: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """A refiner's standardised FastSim voxels ``(B, voxels)`` paired with ``data`` (standardised ``voxels``)
        by ``train.coupling``."""
        if self.source is None:
            raise CalogenError("only a refiner (trained with --source) pairs showers with FastSim ones")
        cfg = self.preset.train
        m = cfg.ot_candidates if cfg.coupling == "ot" else 1
        rows, bins = self.source.draw(data.energies[:, 0], rng, m)
        rows = rows.reshape(-1)
        e = torch.from_numpy(self.source.energies[rows].astype(np.float64))
        z = self.pre.voxels_forward(torch.from_numpy(self.source.showers[rows].astype(np.float64)), e).to(torch.float32)
        if m > 1:
            from calogen.models.refiner import ot_assignment

            z = z[ot_assignment(voxels.float().cpu(), z, bins[:, None] == np.repeat(bins, m)[None, :])]
        return z.to(self.device)

    def losses(
        self, model: torch.nn.Module, data: ShowerData, generator: torch.Generator,
        energy_batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None, rng: np.random.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """Mean energy-, radial- and shape-model losses of ``model`` on ``data`` (energy and radial
        models: on ``energy_batch`` if given; a refiner's FastSim pairs drawn with ``rng``)."""
        tensors = self.tensors(data)
        source = {} if self.source is None else {"source": self.source_tensor(data, tensors[-1], rng or np.random.default_rng())}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            losses = model(*tensors, generator, energy_batch, **source)
        return tuple(loss.float().mean() for loss in losses)  # type: ignore[return-value]

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(self.device).manual_seed(seed)

    def local_shards(self) -> range:
        """The shards of the global batch this process trains on."""
        per_process = self.shards // self.dist.world
        return range(self.dist.rank * per_process, (self.dist.rank + 1) * per_process)

    def _accumulate(self, data: ShowerData, step: int) -> torch.Tensor:
        """Backward pass of this process's shards of the global batch ``data``, each weighted by one over their number
        (DDP averages the processes' gradients at the last one, so every shard weighs ``1 / shards``); returns the
        global batch's mean ``(energy, radial, shape)`` losses."""
        cfg, shards, mine = self.preset.train, self.shards, self.local_shards()
        energy = self._energy_batch(step)
        totals = torch.zeros(3, device=self.device)
        for k in mine:
            part = ShowerData(data.energies[k::shards], data.showers[k::shards], None if data.directions is None else data.directions[k::shards])
            rows = None if energy is None else tuple(None if t is None else t[k::shards] for t in energy)
            gen = self._generator(derive_seed(cfg.seed, step * shards + k))
            rng = np.random.default_rng([cfg.seed, 3, step, k])
            sync = k == mine[-1] or self.dist.world == 1
            with nullcontext() if sync else self.model.no_sync():  # type: ignore[operator]
                losses = self.losses(self.model, part, gen, rows, rng)  # type: ignore[arg-type]
                (sum(losses) / len(mine)).backward()
            totals += torch.stack([loss.detach() for loss in losses]) / len(mine)
        return self.dist.mean_(totals)

    def step(self, data: ShowerData, step: int) -> dict[str, float]:
        """One optimiser step on the global batch ``data`` (every process gets the same); returns the logged
        figures (means over the global batch)."""
        cfg = self.preset.train
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        totals = self._accumulate(data, step)
        (loss_e, loss_r, loss_s), loss = totals.tolist(), float(totals.sum())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        lr = self.lr_at(step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()
        with torch.no_grad():
            for e, r in zip(self.ema.parameters(), self.raw.parameters(), strict=True):
                e.lerp_(r, 1 - cfg.ema_decay)
        record = {"loss": loss, "loss_energy": loss_e, "loss_shape": loss_s, "lr": lr, "grad_norm": float(grad_norm)}
        if self.raw.radial is not None:
            record["loss_radial"] = loss_r
        return record

    @torch.no_grad()
    def validate(self, data: ShowerData) -> float:
        """Mean loss of the EMA weights on ``data`` with fixed noise (every process computes it; rank 0's is returned)."""
        gen = self._generator(derive_seed(self.preset.train.seed, -1))
        rng = np.random.default_rng([self.preset.train.seed, 4])
        bs, total = self.preset.train.batch_size, 0.0
        for s in range(0, len(data), bs):
            chunk = ShowerData(data.energies[s : s + bs], data.showers[s : s + bs], None if data.directions is None else data.directions[s : s + bs])
            total += float(sum(self.losses(self.ema, chunk, gen, rng=rng))) * len(chunk)
        mean = torch.tensor([total / len(data)], dtype=torch.float64, device=self.device)
        self.dist.broadcast_([mean])
        return float(mean.item())

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Flat tensors and JSON state of model, EMA and optimiser."""
        tensors = {f"raw.{k}": v for k, v in self.raw.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        opt_tensors, opt_meta = optimizer_to_flat(self.opt)
        tensors.update(opt_tensors)
        return tensors, {"optimizer": opt_meta}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Inverse of :meth:`state`."""
        for prefix, module in (("raw.", self.raw), ("ema.", self.ema)):
            module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        optimizer_from_flat(self.opt, {k: v.to(self.device) for k, v in tensors.items()}, meta["optimizer"])


def check_shards(preset: Preset, shards: int, world: int) -> None:
    """Refuse a shard count that is not a multiple of the process count or does not divide the batches."""
    cfg = preset.train
    if shards < 1 or shards % world:
        raise CalogenError(
            f"{shards} batch shards cannot be spread evenly over {world} training processes; run on a number of processes that "
            f"divides {shards} (a resumed run keeps the shards it started with)"
        )
    for name in ("batch_size", "energy_batch_size"):
        size = getattr(cfg, name)
        if size is not None and size % shards:
            raise CalogenError(
                f"train.{name} = {size} does not split into {shards} equal shards (one per process, or as many as the run was "
                f"started with); choose a train.{name} divisible by {shards}, or another number of processes"
            )


def device_for(dist: Dist) -> torch.device:
    """This process's CUDA device (``LOCAL_RANK``), or the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", dist.rank)))
    return torch.device("cpu")
