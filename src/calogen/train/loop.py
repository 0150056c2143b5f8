"""The training loop: AdamW with warm-up and cosine decay, gradient clipping, EMA, early stopping,
atomic checkpoints and exact resumption.

Everything random is a pure function of the seed: initial weights (``seed``), the data order
(:class:`~calogen.train.data.BlockLoader`) and the training noise of step ``s``
(``derive_seed(seed, s)``), so a resumed run continues exactly as an uninterrupted one. On a CUDA
machine the loop uses bf16 autocast; started by ``torchrun`` (``WORLD_SIZE`` > 1) it trains with
DistributedDataParallel, each process taking every ``world``-th shower of a batch.

Learning rate at step ``s``: ``lr (s + 1) / warmup`` during warm-up, then
``lr (m + (1 - m) (1 + cos(pi p)) / 2)`` with ``p`` the fraction of the remaining steps done.

The run directory holds ``run.json`` (the SHA-256 of the training file, the geometry and the preset),
written before anything else. A new run needs an empty or missing directory; ``resume=True`` refuses
another data file, geometry or preset, and restarts cleanly a run stopped before its first checkpoint.
A new run that fails before its first checkpoint removes the directory it created.

A distilled student (``teacher``) with ``train.one_step_steps`` first regresses its energy and radial
networks on the teacher's solves (:mod:`calogen.train.one_step`), then checkpoints at step 0 and trains
the shape network; a run interrupted during that stage starts it again.

A hybrid refiner (``model.objective: refiner``, ``source``) pairs every full-simulation shower with a
FastSim shower of the ``source`` file drawn from its incident-energy bin (:class:`~calogen.train.data.SourcePool`,
``train.coupling``); started from a flow-matching model (``teacher``) it keeps that model's energy and radial
networks frozen and fine-tunes its shape network as the bridge of :mod:`calogen.models.refiner`.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calogen.errors import CalogenError
from calogen.generator import derive_seed
from calogen.geometry import Geometry
from calogen.hybrid import fastsim_record
from calogen.io import ShowerData, file_sha256
from calogen.models.generator import ModelPair, save_model
from calogen.models.preprocess import Preprocessor, energy_groups, layer_vector, radial_vector
from calogen.models.refiner import refiner_config
from calogen.outputs import check_output_dir, ensure_free_space
from calogen.train.checkpoint import latest_checkpoint, optimizer_from_flat, optimizer_to_flat, read_checkpoint, write_checkpoint
from calogen.train.config import PRESETS, Preset
from calogen.train.data import BlockLoader, SourcePool
from calogen.train.distill import load_teacher, student_preset, teacher_record
from calogen.train.one_step import build_bank, fit_one_step
from calogen.train.run_record import check_same_run, read_run, run_identity, write_run

__all__ = ["TrainResult", "Trainer", "train"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`: the model directory, steps taken, best validation loss, whether it stopped early."""

    directory: Path
    steps: int
    best_val: float
    stopped_early: bool
    wall_time_s: float


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> _Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(dist.get_rank(), world)


class Trainer:
    """Model, EMA copy and optimiser, with one-step, validation and state functions.

    Args:
        geometry: the readout.
        preset: model and training configuration.
        preprocessor: fitted preprocessing.
        device: where to train.
        dist: process rank and count.
        teacher: the flow-matching model a student (``model.objective`` consistency or average-velocity) starts
            from and distils (:meth:`~calogen.models.generator.ModelPair.start_from`), or a refiner starts from.
        source: a refiner's FastSim showers.
    """

    def __init__(
        self, geometry: Geometry, preset: Preset, preprocessor: Preprocessor, *, device: torch.device | None = None,
        dist: _Dist | None = None, teacher: ModelPair | None = None, source: SourcePool | None = None,
    ) -> None:  # fmt: skip
        self.geometry, self.preset, self.pre = geometry, preset, preprocessor
        if preset.model.radial_width and not preprocessor.radial_dim:
            raise CalogenError("the model has a radial network but the preprocessing was fitted without radial=True")
        self.device = device or torch.device("cpu")
        self.dist = dist or _Dist()
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
            for pair in (self.raw, self.ema):
                pair.start_from(teacher, skip=mapped)
                pair.loop_networks -= mapped | kept
                for name, denoiser in pair.denoisers().items():
                    denoiser.requires_grad_(name not in mapped | kept and pair is self.raw)
        self.model: torch.nn.Module = self.raw
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(self.raw, device_ids=[self.device.index] if self.device.type == "cuda" else None)
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
        size = self.preset.train.energy_batch_size
        if self.energy_pool is None or size is None:
            return None
        n = self.energy_pool[0].shape[0]
        rows = np.random.default_rng([self.preset.train.seed, 2, step]).integers(0, n, size)[self.dist.rank :: self.dist.world]
        index = torch.from_numpy(rows).to(self.device)
        cond, layers, radial = self.energy_pool
        return cond[index], layers[index], None if radial is None else radial[index]

    def fit_energy_maps(self, log: Callable[[dict[str, float]], None] | None = None, progress: bool = False) -> None:
        """A student's one-step energy and radial networks, regressed on a bank of the teacher's solves
        (:mod:`calogen.train.one_step`; needs :meth:`set_energy_pool`); the EMA copy gets the same weights."""
        if self.teacher is None or self.energy_pool is None:
            raise CalogenError("the one-step energy stage needs a teacher and the training showers' energies")
        bank = build_bank(self.teacher, self.energy_pool[0], self.preset.train.bank_size, self.preset.train.seed)
        fit_one_step(self.raw, bank, self.preset.train, log=log, progress=progress)
        for name in ("energy", "radial"):
            if getattr(self.raw, name) is not None:
                getattr(self.ema, name).load_state_dict(getattr(self.raw, name).state_dict())

    def lr_at(self, step: int) -> float:
        """Learning rate of step ``step`` (see the module docstring)."""
        cfg = self.preset.train
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        p = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))

    def energy_tensors(self, data: ShowerData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Scaled energy ``(B, 1)``, standardised layer vector ``(B, 1 + L)`` and radial vector
        ``(B, L * R)`` (None without a radial model)."""
        e = torch.from_numpy(data.energies.astype(np.float64))
        vec = torch.from_numpy(layer_vector(self.geometry, data.showers, self.groups))
        out = [self.pre.energy_forward(e), self.pre.layers_forward(vec, e)]
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

    def step(self, data: ShowerData, step: int) -> dict[str, float]:
        """One optimiser step on ``data`` (this process's share); returns the logged figures."""
        cfg = self.preset.train
        if self.dist.world > 1:
            data = ShowerData(data.energies[self.dist.rank :: self.dist.world], data.showers[self.dist.rank :: self.dist.world])
        self.model.train()
        gen = self._generator(derive_seed(cfg.seed, step * self.dist.world + self.dist.rank))
        rng = np.random.default_rng([cfg.seed, 3, step, self.dist.rank])
        loss_e, loss_r, loss_s = self.losses(self.model, data, gen, self._energy_batch(step), rng)
        loss = loss_e + loss_r + loss_s
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        lr = self.lr_at(step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()
        with torch.no_grad():
            for e, r in zip(self.ema.parameters(), self.raw.parameters(), strict=True):
                e.lerp_(r, 1 - cfg.ema_decay)
        record = {"loss": loss.item(), "loss_energy": loss_e.item(), "loss_shape": loss_s.item(), "lr": lr, "grad_norm": float(grad_norm)}
        if self.raw.radial is not None:
            record["loss_radial"] = loss_r.item()
        return record

    @torch.no_grad()
    def validate(self, data: ShowerData) -> float:
        """Mean loss of the EMA weights on ``data`` with fixed noise."""
        gen = self._generator(derive_seed(self.preset.train.seed, -1))
        rng = np.random.default_rng([self.preset.train.seed, 4])
        bs, total = self.preset.train.batch_size, 0.0
        for s in range(0, len(data), bs):
            chunk = ShowerData(data.energies[s : s + bs], data.showers[s : s + bs])
            total += float(sum(self.losses(self.ema, chunk, gen, rng=rng))) * len(chunk)
        return total / len(data)

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


def _device(dist: _Dist) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", dist.rank)))
    return torch.device("cpu")


def _fit_preprocessing(loader: BlockLoader, geometry: Geometry, preset: Preset) -> Preprocessor:
    fit = loader.read_blocks(loader.train_blocks, preset.train.fit_max)
    groups = energy_groups(geometry, preset.model.energy_groups)
    pre = Preprocessor.fit(geometry, fit.energies, fit.showers, groups=groups, radial=bool(preset.model.radial_width))
    energies = loader.train_energies()
    return replace(pre, e_min=float(energies.min()), e_max=float(max(energies.max(), energies.min() * 1.0001)))


def _copy_occupancy(teacher: Path, out: Path) -> None:
    """A refiner started from ``teacher`` uses its occupancy stage: the hit counts depend on the ring energies
    alone, which come from the teacher's own energy and radial networks; the spectrum settings are those fitted
    for the teacher's shape network at each NFE."""
    from calogen.models.occupancy import OCCUPANCY_FILES
    from calogen.outputs import atomic_path

    for name in OCCUPANCY_FILES:
        with atomic_path(out / name) as tmp:
            shutil.copyfile(teacher / name, tmp)


def _append_history(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()


def _truncate_history(path: Path, step: int) -> None:
    """Keep the records up to ``step``; a line cut short by a kill is dropped."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError):
            continue
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


def train(
    data: str | os.PathLike[str],
    geometry: Geometry | str,
    preset: Preset | str | None,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = False,
    teacher: str | os.PathLike[str] | None = None,
    source: str | os.PathLike[str] | None = None,
) -> TrainResult:
    """Train an energy + shape model on a shower file and write a model directory.

    Args:
        data: CaloChallenge HDF5 training file.
        geometry: its readout (built-in name, binning XML or Geometry).
        preset: built-in preset name, preset file or :class:`Preset`; None means ``cpu-small`` for a new
            run and the stored preset when resuming (a given preset must equal the stored one).
        out: model directory (created; must be empty or missing unless ``resume``).
        resume: continue the run in ``out`` from its newest checkpoint, or from the start if it was
            stopped before the first one; refused if ``data``, the geometry or the preset differ.
        max_steps: override ``train.max_steps``.
        progress: show a tqdm progress bar.
        teacher: a flow-matching model directory to distil into a student (:mod:`calogen.train.distill`);
            the preset must be a student preset; or, for a refiner, the model whose architecture, preprocessing,
            energy and radial networks it keeps and whose shape network it starts from.
        source: a refiner's FastSim file (same geometry and energies as ``data``; needs a refiner preset
            such as ``hybrid-small``).
    """
    geometry = Geometry.resolve(geometry)
    given = None if preset is None else preset if isinstance(preset, Preset) else Preset.resolve(preset)
    out = check_output_dir(out)
    created = not out.exists()
    if not resume and not created and any(out.iterdir()):
        raise CalogenError(
            f"{out} is not empty (it holds a model or an interrupted run); pass --resume to continue it, or choose another --out"
        )
    stored = read_run(out) if resume else None
    checkpoint = latest_checkpoint(out) if resume else None
    if resume and stored is None and checkpoint is None:
        raise CalogenError(f"{out}: no training run to resume there; start without --resume")
    tensors, meta = read_checkpoint(checkpoint) if checkpoint else ({}, {})
    if checkpoint:
        preset = Preset.from_dict(given.name if given else "resumed", meta["preset"])
    elif stored is not None and given is None:
        preset = Preset.from_dict("resumed", stored["preset"])
    else:
        preset = given or PRESETS["cpu-small"]
    if max_steps is not None:
        preset = replace(preset, train=replace(preset.train, max_steps=max_steps))
    teacher_model = None if teacher is None else load_teacher(teacher, geometry)
    refiner = preset.model.objective == "refiner"
    if refiner != (source is not None):
        raise CalogenError("--source FAST.h5 goes with a refiner preset (e.g. hybrid-small), and a refiner preset needs --source")
    if teacher_model is not None:
        adapt = (lambda p: replace(p, model=refiner_config(p.model, teacher_model.config))) if refiner else (lambda p: student_preset(p, teacher_model))
        preset = adapt(preset)
        given = None if given is None else adapt(given)
    cfg = preset.train
    dist = _Dist.from_env()
    device = _device(dist)
    main = dist.rank == 0
    loader = BlockLoader(data, geometry, batch_size=cfg.batch_size, block_size=cfg.block_size,
                         shuffle_blocks=cfg.shuffle_blocks, val_fraction=cfg.val_fraction, seed=cfg.seed)  # fmt: skip
    try:
        identity = run_identity(data, geometry, preset)
        if teacher is not None:
            identity["teacher"] = teacher_record(teacher)
        pool = None
        if source is not None:
            pool = SourcePool(source, geometry, loader.file.read_energies(), bins=cfg.coupling_bins)
            identity["source"] = {"path": str(source), "sha256": file_sha256(source)}
        if stored is not None:
            check_same_run(out, stored, identity, given)
            if (stored.get("source") or {}).get("sha256") != (identity.get("source") or {}).get("sha256"):
                raise CalogenError(f"{out} was trained with --source {(stored.get('source') or {}).get('path')}; resume with the same file")
        elif resume:
            log.warning("%s has no run.json (written by an older calogen); cannot check that --data and the preset match", out)
        if not checkpoint and main:  # a new run, or one stopped before its first checkpoint: start clean
            out.mkdir(parents=True, exist_ok=True)
            (out / "history.jsonl").unlink(missing_ok=True)
            write_run(out, identity)
        if checkpoint:
            pre = Preprocessor.load(out)
        elif teacher_model is not None:
            pre = teacher_model.preprocessor
            if main:
                pre.save(out)
                if refiner and teacher_model.occupancy is not None:
                    _copy_occupancy(Path(teacher_model.directory), out)
        else:
            pre = _fit_preprocessing(loader, geometry, preset)
            if main:
                pre.save(out)
        val = loader.read_blocks(loader.val_blocks, cfg.val_max)
        trainer = Trainer(geometry, preset, pre, device=device, dist=dist, teacher=None if teacher_model is None else teacher_model.pair,
                          source=pool)  # fmt: skip
        if cfg.energy_batch_size is not None:
            trainer.set_energy_pool(loader)
        start = int(meta.get("step", 0))
        best, bad = float(meta.get("best_val", math.inf)), int(meta.get("bad_evals", 0))
        wall = float(meta.get("wall_time_s", 0.0))
        history = out / "history.jsonl"
        if checkpoint:
            trainer.load_state(tensors, meta)
            _truncate_history(history, start)
        elif teacher_model is not None and cfg.one_step_steps:  # before the loop; a checkpoint at step 0 keeps it
            trainer.fit_energy_maps(log=(lambda r: _append_history(history, r)) if main else None, progress=progress and main)
            if main:
                state, state_meta = trainer.state()
                write_checkpoint(out, 0, state, {**state_meta, "step": 0, "best_val": best, "bad_evals": bad, "stopped_early": False,
                                                 "wall_time_s": wall, "preset": preset.to_dict()})  # fmt: skip
        extra = {"preset": preset.to_dict(), "training": {"data": str(data), "seed": cfg.seed, **{k: identity[k] for k in ("teacher", "source") if k in identity}}}
        if pool is not None:
            extra["refiner"] = {"fastsim": fastsim_record(pool.attrs, geometry), "source": {**identity["source"], **pool.record()}}
        stopped, step = bool(meta.get("stopped_early", False)), start
        bar = None
        if progress and main:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.max_steps, initial=start, unit="step", desc="train")
        t0 = time.perf_counter()
        batches = loader.batches(start)
        while step < cfg.max_steps and not stopped:
            record = {"step": step + 1, **trainer.step(next(batches), step)}
            step += 1
            if step % cfg.eval_every == 0 or step == cfg.max_steps:
                record["val_loss"] = trainer.validate(val)
                if record["val_loss"] < best:
                    best, bad = record["val_loss"], 0
                else:
                    bad += 1
                    stopped = bad >= cfg.patience
            if main:
                _append_history(history, record)
            if bar is not None:
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                bar.update(1)
            if main and (step % cfg.checkpoint_every == 0 or step == cfg.max_steps or stopped):
                elapsed = wall + time.perf_counter() - t0
                state, state_meta = trainer.state()
                weights = sum(t.numel() * t.element_size() for t in state.values())
                ensure_free_space(out, 2 * weights)  # checkpoint and model weights; safetensors fails badly on a full disk
                run = {"step": step, "best_val": best, "bad_evals": bad, "stopped_early": stopped, "wall_time_s": elapsed}
                write_checkpoint(out, step, state, {**state_meta, **run, "preset": preset.to_dict()})
                training = {**extra["training"], "steps": step, "best_val": best, "stopped_early": stopped, "wall_time_s": elapsed}
                save_model(out, geometry=geometry, config=preset.model, preprocessor=pre, raw=trainer.raw, ema=trainer.ema,
                           extra={**extra, "training": training})  # fmt: skip
        if bar is not None:
            bar.close()
        if stopped:
            log.info("stopped early at step %d: validation loss did not improve %d times", step, cfg.patience)
        return TrainResult(out, step, best, stopped, wall + time.perf_counter() - t0)
    except BaseException:
        if created and main and latest_checkpoint(out) is None:  # nothing worth keeping
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        loader.close()
