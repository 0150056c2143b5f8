"""Training presets: typed frozen dataclasses, built in or loaded from YAML/JSON (unknown keys are errors).

A preset file has two sections, each optional, overriding the defaults of :class:`ModelConfig` and
:class:`TrainConfig`::

    model: {channels: [8, 16], compress_layers: 12}
    train: {batch_size: 64, max_steps: 4000}

Example:
    >>> Preset.resolve("tiny").train.max_steps
    40
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calogen.errors import CalogenError
from calogen.models.config import ModelConfig, check_fields

__all__ = ["PRESETS", "Preset", "TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Args:
        batch_size: showers per step (over all processes).
        energy_batch_size: layer-energy vectors per step for the energy model, drawn from all training
            showers (held in memory, ``1 + L`` numbers each); None: the step's showers.
        lr: peak AdamW learning rate; weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up, then cosine decay to ``lr * min_lr_ratio`` at ``max_steps``.
        max_steps: optimiser steps.
        grad_clip: maximum global gradient norm.
        ema_decay: decay of the exponential moving average of the weights.
        val_fraction: share of the showers held out for validation (whole blocks).
        val_max: largest number of validation showers used.
        eval_every: steps between validation losses (EMA weights).
        patience: validations without improvement before stopping early.
        checkpoint_every: steps between checkpoints.
        block_size: rows read from the HDF5 file at once; shuffle_blocks: blocks mixed per shuffle buffer.
        fit_max: largest number of showers used to fit the preprocessing.
        seed: seed of data order, split and noise (0 <= seed < 2**63).
        one_step_steps: a student's energy and radial networks are regressed on a bank of the teacher's
            solves for this many steps before the shape network trains, and frozen after
            (:mod:`calogen.train.one_step`); 0: they train with the shape network by the objective's rule.
        one_step_batch_size, one_step_lr, one_step_ema_decay: that regression's batch (energy rows; the
            radial network takes a quarter as many), peak learning rate and EMA decay.
        bank_size: teacher energy solves in the bank, a quarter as many radial ones (a twentieth of each
            held out for validation).
        coupling: how a refiner pairs each full-simulation shower with a FastSim shower of the ``--source``
            file: ``independent`` (drawn uniformly from its incident-energy bin) or ``ot`` (minibatch optimal
            transport: ``ot_candidates`` drawn per shower from its bin, then the assignment of distinct
            candidates that minimises the summed squared distance in the preprocessed space).
        coupling_bins: incident-energy bins of equal count over the FastSim file.
        ot_candidates: FastSim candidates per full-simulation shower for ``coupling: ot``.

    Every field is type-checked strictly (:func:`~calogen.models.config.check_fields`: ``true`` is not
    an integer, ``1.5`` not a step count, NaN and inf are refused) and range-checked on construction,
    so a bad preset fails before anything is written.
    """

    batch_size: int = 64
    energy_batch_size: int | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    max_steps: int = 10_000
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    val_fraction: float = 0.1
    val_max: int = 2000
    eval_every: int = 250
    patience: int = 20
    checkpoint_every: int = 250
    block_size: int = 1024
    shuffle_blocks: int = 8
    fit_max: int = 50_000
    seed: int = 0
    one_step_steps: int = 0
    one_step_batch_size: int = 1024
    one_step_lr: float = 1e-3
    one_step_ema_decay: float = 0.998
    bank_size: int = 200_000
    coupling: str = "independent"
    coupling_bins: int = 100
    ot_candidates: int = 4

    def __post_init__(self) -> None:
        check_fields(self, "train")
        positive = ("batch_size", "max_steps", "eval_every", "patience", "checkpoint_every", "block_size", "shuffle_blocks", "fit_max", "val_max",
                    "one_step_batch_size", "bank_size", "coupling_bins", "ot_candidates")  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise CalogenError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.energy_batch_size is not None and self.energy_batch_size < 1:
            raise CalogenError(f"train.energy_batch_size must be >= 1 or null, got {self.energy_batch_size}")
        if not 0 < self.val_fraction < 1:
            raise CalogenError(f"train.val_fraction must lie in (0, 1), got {self.val_fraction}")
        for name in ("ema_decay", "one_step_ema_decay"):
            if not 0 <= getattr(self, name) < 1:
                raise CalogenError(f"train.{name} must lie in [0, 1), got {getattr(self, name)}")
        if self.one_step_steps < 0 or self.one_step_lr <= 0:
            raise CalogenError(f"train.one_step_steps must be >= 0 and train.one_step_lr > 0, got {self.one_step_steps}, {self.one_step_lr}")
        if self.lr <= 0 or self.warmup_steps < 0:
            raise CalogenError(f"train.lr must be > 0 and train.warmup_steps >= 0, got {self.lr}, {self.warmup_steps}")
        if self.weight_decay < 0 or self.grad_clip <= 0:
            raise CalogenError(f"train.weight_decay must be >= 0 and train.grad_clip > 0, got {self.weight_decay}, {self.grad_clip}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise CalogenError(f"train.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.coupling not in ("independent", "ot"):
            raise CalogenError(f"train.coupling {self.coupling!r} is unknown; use independent or ot")
        if not 0 <= self.seed < 2**63:
            raise CalogenError(f"train.seed must lie in [0, 2**63), got {self.seed}")


@dataclass(frozen=True)
class Preset:
    """A named model + training configuration."""

    name: str
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any], base: Preset | None = None) -> Preset:
        """Build from ``{"model": {...}, "train": {...}}`` on top of ``base``; unknown keys raise."""
        base = base or cls(name)
        if not isinstance(data, dict):
            raise CalogenError(f"preset {name!r} must be a mapping with 'model' and/or 'train' sections")
        unknown = set(data) - {"model", "train"}
        if unknown:
            raise CalogenError(f"preset {name!r}: unknown section(s) {sorted(unknown)}; use 'model' and 'train'")
        parts = {}
        for section, current in (("model", base.model), ("train", base.train)):
            values = data.get(section) or {}
            if not isinstance(values, dict):
                raise CalogenError(f"preset {name!r}: section {section!r} must be a mapping of settings, got {values!r}")
            known = {f.name for f in dataclasses.fields(current)}
            bad = set(values) - known
            if bad:
                raise CalogenError(f"preset {name!r}: unknown {section} key(s) {sorted(bad)}; known: {sorted(known)}")
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
            parts[section] = dataclasses.replace(current, **values)
        return cls(name, parts["model"], parts["train"])

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``model`` and ``train`` sections)."""
        return {"model": dataclasses.asdict(self.model), "train": dataclasses.asdict(self.train)}

    @classmethod
    def resolve(cls, spec: str | os.PathLike[str]) -> Preset:
        """A built-in preset name (see :data:`PRESETS`) or a ``.yaml``/``.yml``/``.json`` file."""
        if str(spec) in PRESETS:
            return PRESETS[str(spec)]
        path = Path(spec)
        if path.suffix.lower() not in (".yaml", ".yml", ".json"):
            raise CalogenError(f"unknown preset {str(spec)!r}; choose one of {sorted(PRESETS)} or give a .yaml/.json file")
        try:
            text = path.read_text()
        except OSError as exc:
            raise CalogenError(f"preset file {path} cannot be read ({exc.strerror})") from None
        import yaml

        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise CalogenError(f"preset file {path} cannot be parsed ({exc})") from None
        return cls.from_dict(path.stem, data or {})


PRESETS: dict[str, Preset] = {
    "tiny": Preset.from_dict("tiny", {
        "model": {"channels": (4, 8), "emb_dim": 16, "energy_width": 32, "energy_depth": 1, "radial_width": 16, "radial_depth": 1, "nfe": 4,
                  "energy_sampler": "midpoint", "energy_nfe": 6},
        "train": {"batch_size": 32, "energy_batch_size": 64, "lr": 3e-3, "warmup_steps": 5, "max_steps": 40, "ema_decay": 0.9,
                  "eval_every": 10, "checkpoint_every": 10, "block_size": 64, "shuffle_blocks": 2},
    }),
    "cpu-small": Preset.from_dict("cpu-small", {
        "model": {"channels": (4, 8), "compress_layers": 9, "emb_dim": 32, "energy_width": 128,
                  "energy_depth": 3, "radial_width": 32, "radial_depth": 2, "sampler": "euler", "nfe": 2, "energy_sampler": "midpoint", "energy_nfe": 16},
        "train": {"batch_size": 32, "energy_batch_size": 512, "lr": 3e-3, "warmup_steps": 100, "max_steps": 6000,
                  "ema_decay": 0.995, "eval_every": 100, "checkpoint_every": 100, "patience": 12, "val_max": 500},
    }),
    "ds2-base": Preset.from_dict("ds2-base", {
        "model": {"channels": (32, 64, 128), "attention_levels": (1, 2), "compress_layers": 23, "emb_dim": 128,
                  "energy_width": 256, "energy_depth": 4, "radial_width": 128, "radial_depth": 3, "sampler": "heun", "nfe": 16,
                  "energy_sampler": "heun", "energy_nfe": 32},
        "train": {"batch_size": 128, "energy_batch_size": 2048, "lr": 5e-4, "warmup_steps": 1000, "max_steps": 200_000, "ema_decay": 0.9995,
                  "eval_every": 2000, "checkpoint_every": 2000},
    }),
    "ds3-base": Preset.from_dict("ds3-base", {
        "model": {"channels": (32, 64, 128), "attention_levels": (2,), "compress_layers": 23, "emb_dim": 128,
                  "energy_width": 256, "energy_depth": 4, "radial_width": 128, "radial_depth": 3, "sampler": "heun", "nfe": 16,
                  "energy_sampler": "heun", "energy_nfe": 32},
        "train": {"batch_size": 64, "energy_batch_size": 2048, "lr": 5e-4, "warmup_steps": 1000, "max_steps": 300_000, "ema_decay": 0.9995,
                  "eval_every": 2000, "checkpoint_every": 2000, "block_size": 512},
    }),
}  # fmt: skip
_STUDENT_TRAIN = {"batch_size": 32, "energy_batch_size": 512, "lr": 5e-4, "warmup_steps": 50, "max_steps": 2000, "ema_decay": 0.99,
                  "eval_every": 100, "checkpoint_every": 100, "patience": 1000, "val_max": 500,
                  "one_step_steps": 12_000, "bank_size": 800_000}  # fmt: skip
_STUDENT_ENERGY = {"energy_width": 256, "energy_depth": 4, "radial_width": 64, "radial_depth": 3}
PRESETS["student-consistency"] = Preset.from_dict("student-consistency", {
    "model": {"objective": "consistency", "sampler": "euler", "nfe": 1, "energy_sampler": "euler", "energy_nfe": 1, **_STUDENT_ENERGY},
    "train": _STUDENT_TRAIN,
})  # fmt: skip
PRESETS["student-average-velocity"] = Preset.from_dict("student-average-velocity", {
    "model": {"objective": "average-velocity", "sampler": "jump", "nfe": 1, "energy_sampler": "jump", "energy_nfe": 1, **_STUDENT_ENERGY},
    "train": _STUDENT_TRAIN,
})  # fmt: skip
PRESETS["hybrid-small"] = Preset.from_dict("hybrid-small", {
    "model": {**dataclasses.asdict(PRESETS["cpu-small"].model), "objective": "refiner", "bridge_sigma": 0.1, "sampler": "euler", "nfe": 2},
    "train": {"batch_size": 32, "lr": 1e-3, "warmup_steps": 50, "max_steps": 3000, "ema_decay": 0.99, "eval_every": 100,
              "checkpoint_every": 100, "patience": 1000, "val_max": 500},
})  # fmt: skip
PRESETS["cpu-small-cells"] = Preset.from_dict("cpu-small-cells", {
    "model": {**dataclasses.asdict(PRESETS["cpu-small"].model), "cell_alpha": 24, "directions": True},
    "train": dataclasses.asdict(PRESETS["cpu-small"].train),
})  # fmt: skip
"""Built-in presets: ``tiny`` (tests, seconds), ``cpu-small`` (DS2 on one core in about an hour),
``ds2-base`` and ``ds3-base`` (GPU), and the one-step students ``student-consistency`` and
``student-average-velocity`` (``calogen train --teacher``), which fine-tune the shape network of the teacher they
distil for 2000 steps after regressing wider one-step energy and radial networks on 800,000 of its energy solves;
``hybrid-small``, a refiner of FastSim showers (``calogen train --source FAST.h5``; with ``--teacher`` it keeps that
flow-matching model's architecture, preprocessing, energy and radial networks, and starts from its shape network);
``cpu-small-cells``, ``cpu-small`` for a cell geometry such as ``hgcal-like`` (grids of 24 alpha bins x the rings, layers
compressed to 9, conditioned on the incident direction)."""
