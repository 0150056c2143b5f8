"""The training loop: AdamW with warm-up and cosine decay, gradient clipping, EMA, early stopping,
atomic checkpoints and exact resumption.

Everything random is a pure function of the seed: initial weights (``seed``), the data order
(:class:`~calogen.train.data.BlockLoader`) and the training noise (:class:`~calogen.train.trainer.Trainer`),
so a resumed run continues exactly as an uninterrupted one.

Under ``torchrun`` (``WORLD_SIZE`` > 1) every process reads the same global batches and trains on its shards
of them with DistributedDataParallel (:class:`~calogen.train.trainer.Trainer`); the run directory must be on a
file system every process sees. Rank 0 alone writes (``run.json``, the preprocessing, ``history.jsonl``,
checkpoints, the model) and logs; the other processes wait at a barrier after each write and read the
preprocessing rank 0 fitted. The number of batch shards (default: the number of processes) is stored in
``run.json``, so a run resumes exactly on any number of processes that divides it.

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

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from calogen.errors import CalogenError
from calogen.geometry import Geometry, resolve_geometry
from calogen.hybrid import fastsim_record
from calogen.io import file_sha256
from calogen.models.generator import save_model
from calogen.models.preprocess import Preprocessor
from calogen.models.refiner import refiner_config
from calogen.models.voxel_groups import energy_groups
from calogen.outputs import check_output_dir, ensure_free_space
from calogen.train.checkpoint import (
    latest_checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from calogen.train.config import PRESETS, Preset
from calogen.train.data import BlockLoader, SourcePool
from calogen.train.distill import load_teacher, student_preset, teacher_record
from calogen.train.run_record import check_same_run, read_run, run_identity, write_run
from calogen.train.trainer import Dist, Trainer, check_shards, device_for

__all__ = ["TrainResult", "train"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`: the model directory, steps taken, best validation loss, whether it stopped early."""

    directory: Path
    steps: int
    best_val: float
    stopped_early: bool
    wall_time_s: float


def _fit_preprocessing(loader: BlockLoader, geometry: Geometry, preset: Preset) -> Preprocessor:
    fit = loader.read_blocks(loader.train_blocks, preset.train.fit_max)
    groups = energy_groups(geometry, preset.model.energy_groups)
    pre = Preprocessor.fit(geometry, fit.energies, fit.showers, groups=groups, radial=bool(preset.model.radial_width), directions=fit.directions)
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


def _shards(out: Path, stored: dict[str, Any] | None, given: int | None, dist: Dist) -> int:
    """The run's batch shards: the stored count when resuming (a given one must match), else ``given`` or the process count."""
    kept = None if stored is None else stored.get("shards")
    if kept is not None and given is not None and given != kept:
        raise CalogenError(f"{out} was trained with {kept} batch shards, not {given}; resume without shards (the stored count is used)")
    return int(kept or given or dist.world)


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
    shards: int | None = None,
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
        shards: parts of each global batch with their own noise (:class:`~calogen.train.trainer.Trainer`): a
            multiple of the number of processes; default the number of processes for a new run, the stored one
            when resuming (a given one must equal it). One process with ``shards=K`` reproduces a ``K``-process run.
    """
    dist = Dist.from_env()
    main = dist.main
    geometry = resolve_geometry(geometry)
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
    shards = _shards(out, stored, shards, dist)
    check_shards(preset, shards, dist.world)
    device = device_for(dist)
    loader = BlockLoader(data, geometry, batch_size=cfg.batch_size, block_size=cfg.block_size,
                         shuffle_blocks=cfg.shuffle_blocks, val_fraction=cfg.val_fraction, seed=cfg.seed)  # fmt: skip
    try:
        identity = run_identity(data, geometry, preset, shards)
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
        elif resume and main:
            log.warning("%s has no run.json (written by an older calogen); cannot check that --data and the preset match", out)
        dist.barrier()  # every process has checked the directory before rank 0 writes into it
        if not checkpoint and main:  # a new run, or one stopped before its first checkpoint: start clean
            out.mkdir(parents=True, exist_ok=True)
            (out / "history.jsonl").unlink(missing_ok=True)
            write_run(out, identity)
            pre = teacher_model.preprocessor if teacher_model is not None else _fit_preprocessing(loader, geometry, preset)
            pre.save(out)
            if refiner and teacher_model is not None and teacher_model.occupancy is not None:
                _copy_occupancy(Path(teacher_model.directory), out)
        dist.barrier()
        if checkpoint or not main:
            pre = Preprocessor.load(out)
        val = loader.read_blocks(loader.val_blocks, cfg.val_max)
        trainer = Trainer(geometry, preset, pre, device=device, dist=dist, shards=shards, teacher=None if teacher_model is None else teacher_model.pair,
                          source=pool)  # fmt: skip
        if cfg.energy_batch_size is not None:
            trainer.set_energy_pool(loader)
        start = int(meta.get("step", 0))
        best, bad = float(meta.get("best_val", math.inf)), int(meta.get("bad_evals", 0))
        wall = float(meta.get("wall_time_s", 0.0))
        history = out / "history.jsonl"
        if checkpoint:
            trainer.load_state(tensors, meta)
            if main:
                _truncate_history(history, start)
        elif teacher_model is not None and cfg.one_step_steps:  # before the loop; a checkpoint at step 0 keeps it
            trainer.fit_energy_maps(log=(lambda r: _append_history(history, r)) if main else None, progress=progress and main)
            if main:
                state, state_meta = trainer.state()
                write_checkpoint(out, 0, state, {**state_meta, "step": 0, "best_val": best, "bad_evals": bad, "stopped_early": False,
                                                 "wall_time_s": wall, "preset": preset.to_dict()})  # fmt: skip
            dist.barrier()
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
            save = step % cfg.checkpoint_every == 0 or step == cfg.max_steps or stopped
            if save and main:
                elapsed = wall + time.perf_counter() - t0
                state, state_meta = trainer.state()
                weights = sum(t.numel() * t.element_size() for t in state.values())
                ensure_free_space(out, 2 * weights)  # checkpoint and model weights; safetensors fails badly on a full disk
                run = {"step": step, "best_val": best, "bad_evals": bad, "stopped_early": stopped, "wall_time_s": elapsed}
                write_checkpoint(out, step, state, {**state_meta, **run, "preset": preset.to_dict()})
                training = {**extra["training"], "steps": step, "best_val": best, "stopped_early": stopped, "wall_time_s": elapsed}
                save_model(out, geometry=geometry, config=preset.model, preprocessor=pre, raw=trainer.raw, ema=trainer.ema,
                           extra={**extra, "training": training})  # fmt: skip
            if save:
                dist.barrier()  # the other processes go on once the checkpoint is complete
        if bar is not None:
            bar.close()
        if stopped and main:
            log.info("stopped early at step %d: validation loss did not improve %d times", step, cfg.patience)
        return TrainResult(out, step, best, stopped, wall + time.perf_counter() - t0)
    except BaseException:
        if created and main and latest_checkpoint(out) is None:  # nothing worth keeping
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        loader.close()
