"""Adversarial tuning of a trained generator on the official high-level vector.

A distilled one-step student matches its teacher's ODE, defects included, and a classifier on the
high-level vector (layer energies, centres, widths, sparsity) still tells it from the MC. Tuning moves the
generator towards the training showers on exactly those features:

* a **critic**, an MLP on the standardised vector (:class:`~calogen.train.high_level.HighLevelVector`, the
  evaluation's cls-high and FPD input), learns to tell generated from training showers (logistic loss, an R1
  gradient penalty on the training showers, optionally extra steps on a replay buffer of earlier generated
  vectors);
* the generator's networks (``networks``: shape and radial by default, the energy network too on request) are moved to fool it through the whole
  pipeline at the model's own sampler and NFE, occupancy stage included (which voxels are hit is not
  differentiable, how their ring's energy is shared is), plus ``anchor`` times the squared distance of their
  outputs (shape logits, ``log1p`` of the group energies) to the starting model's on the same noise, which keeps
  the voxel-level distribution the distillation reached;
* optionally (``feature_matching`` > 0) a conditional feature-matching term: generated and training showers of the
  same rows share their incident energy (and direction), and the means of their vector differences times each
  condition (1, the standardised ``log E``, the direction's unit vector) are pulled to zero. The squared mean is
  estimated without bias as the product of the two half-batches' means: the square of one batch mean would add the
  generated showers' variance over the batch size, whose gradient narrows their distributions. It targets the
  conditional means the critic barely sees, such as a shower's centre in its first layers against its incidence;
* the written weights are an exponential moving average of the tuned ones.

Every step draws its noise, incident energies and batches from ``derive_seed(seed, step)``, so a run
interrupted and resumed (checkpoints every ``checkpoint_every`` steps in ``OUT.partial``) gives the same bytes
as one uninterrupted run. The result is a copy of the model directory with ``adversarial.json`` (settings,
source, data, the last critic figures) and new weights.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from calogen.errors import CalogenError
from calogen.generator import derive_seed
from calogen.io import file_sha256
from calogen.models.preprocess import direction_features
from calogen.train.checkpoint import atomic_write_json, atomic_write_tensors, latest_checkpoint, optimizer_from_flat, optimizer_to_flat, write_checkpoint
from calogen.train.high_level import HighLevelVector

__all__ = ["NETWORKS", "TuneError", "TuneSettings", "tune_adversarial"]

NETWORKS = ("shape", "energy", "radial")
"""The generator networks a tune may move."""
FORMAT = "calogen-adversarial/1"
_CRITIC_WIDTH = 256


class TuneError(CalogenError):
    """An adversarial tune cannot start or resume."""


@dataclass(frozen=True)
class TuneSettings:
    """Settings of :func:`tune_adversarial`.

    Args:
        steps: generator steps.
        batch_size: generated and training showers per step.
        lr, critic_lr: Adam learning rates of the generator and the critic.
        critic_steps: critic steps per generator step (the first on the fresh showers, the rest on the replay buffer).
        replay: generated vectors kept for the extra critic steps (0: none).
        anchor: weight of the distance to the starting model's outputs.
        r1: weight of the R1 penalty (squared gradient of the critic on training showers).
        ema_decay: decay of the moving average that is written.
        feature_matching: weight of the conditional feature-matching term (0: none; the sum over columns and
            conditions of the squared condition-weighted mean of the standardised vector differences, estimated as
            the product of the two half-batches' means).
        networks: which of :data:`NETWORKS` are tuned (default shape and radial: tuning the energy network
            moved E_tot/E_inc, docs/training.md).
        checkpoint_every: steps between checkpoints.
        seed: seed of the critic's initialisation and of every step's draws.
    """

    steps: int = 600
    batch_size: int = 128
    lr: float = 3e-5
    critic_lr: float = 3e-4
    critic_steps: int = 4
    replay: int = 4096
    anchor: float = 10.0
    r1: float = 1.0
    ema_decay: float = 0.99
    feature_matching: float = 0.0
    networks: tuple[str, ...] = ("shape", "radial")
    checkpoint_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "critic_steps", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TuneError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("lr", "critic_lr", "anchor", "r1", "ema_decay", "feature_matching"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise TuneError(f"{name} must be a finite number >= 0, got {value!r}")
        if not 0 <= self.ema_decay < 1:
            raise TuneError(f"ema_decay must lie in [0, 1), got {self.ema_decay!r}")
        if self.feature_matching and self.batch_size < 2:
            raise TuneError(f"feature matching compares two half-batches: batch_size must be >= 2, got {self.batch_size}")
        if isinstance(self.replay, bool) or not isinstance(self.replay, int) or self.replay < 0:
            raise TuneError(f"replay must be an integer >= 0, got {self.replay!r}")
        if not self.networks or not set(self.networks) <= set(NETWORKS) or len(set(self.networks)) != len(self.networks):
            raise TuneError(f"networks must be distinct names among {NETWORKS}, got {self.networks!r}")


def _critic(columns: int) -> nn.Module:
    return nn.Sequential(nn.Linear(columns, _CRITIC_WIDTH), nn.LeakyReLU(0.2), nn.Linear(_CRITIC_WIDTH, _CRITIC_WIDTH),
                         nn.LeakyReLU(0.2), nn.Linear(_CRITIC_WIDTH, 1))  # fmt: skip


def _critic_loss(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, r1: float) -> torch.Tensor:
    """Logistic loss (training showers 1, generated 0) plus ``r1 / 2`` times the squared gradient on the training showers."""
    real = real.detach().requires_grad_(r1 > 0)
    d_real, d_fake = critic(real), critic(fake.detach())
    loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    if r1 > 0:
        (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
        loss = loss + r1 / 2 * grad.pow(2).sum(1).mean()
    return loss


class _Tuner:
    """The state of one tune: generator pipeline, its frozen start, critic, optimisers, EMA and replay buffer."""

    def __init__(self, model: Any, reference: np.ndarray, energies: np.ndarray, directions: np.ndarray | None, settings: TuneSettings) -> None:
        self.model, self.settings = model, settings
        self.pipe = model.export_module(model.nfe, model.sampler)
        self.start = copy.deepcopy(self.pipe).requires_grad_(False)
        self.pipe.requires_grad_(False)
        nets = {"shape": self.pipe.pair.shape, "energy": self.pipe.pair.energy, "radial": self.pipe.pair.radial}
        self.names = [f"{n}.{k}" for n in settings.networks if nets[n] is not None for k, _ in nets[n].named_parameters()]
        self.params = [p.requires_grad_(True) for n in settings.networks if nets[n] is not None for p in nets[n].parameters()]
        self.ema = [p.detach().clone() for p in self.params]
        self.vector = HighLevelVector(model.geometry)
        self.mean, self.scale = reference.mean(0), reference.std(0) + 1e-6
        self.reference = torch.from_numpy(((reference - self.mean) / self.scale).astype(np.float32))
        self.energies, self.directions = energies.astype(np.float32), directions
        log_e = np.log(self.energies)
        self.log_e = torch.from_numpy((log_e - log_e.mean()) / (log_e.std() + 1e-6))
        torch.manual_seed(settings.seed)
        self.critic = _critic(reference.shape[1])
        self.opt = torch.optim.Adam(self.params, lr=settings.lr, betas=(0.5, 0.9))
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=settings.critic_lr, betas=(0.5, 0.9))
        self.replay = torch.empty(0, reference.shape[1])
        self.energy_noise = model.draw_noise(1, seed=0)[0].shape[1]

    def _standardised(self, energies: torch.Tensor, showers: torch.Tensor, directions: torch.Tensor | None = None) -> torch.Tensor:
        """The critic's input: the standardised vector, followed by the unit vector of the direction when there is one."""
        mean, scale = torch.from_numpy(self.mean.astype(np.float32)), torch.from_numpy(self.scale.astype(np.float32))
        vector = self.vector(energies, showers)
        if directions is not None:
            vector = torch.cat([vector, direction_features(directions)], dim=1)
        return torch.nan_to_num((vector - mean) / scale)

    def step(self, step: int) -> dict[str, float]:
        """One generator step (and its critic steps) with the draws of ``derive_seed(seed, step)``."""
        s, b = self.settings, self.settings.batch_size
        rng = np.random.default_rng(derive_seed(s.seed, step))
        gen = torch.Generator().manual_seed(derive_seed(s.seed, step))
        rows = rng.integers(0, len(self.energies), b)
        e = torch.from_numpy(self.energies[rows]).reshape(-1, 1)
        d = None if self.directions is None else torch.from_numpy(self.directions[rows].astype(np.float32))
        noise_energy = torch.randn((b, self.energy_noise), generator=gen)
        noise_shape = torch.randn((b, self.model.geometry.n_voxels), generator=gen)
        targets, raw, logits = self.pipe.stages(e, noise_energy, noise_shape, directions=d)
        fake = self._standardised(e, self.pipe.finish(targets, raw, logits, e, noise_energy), d)
        real = self.reference[torch.from_numpy(rng.integers(0, len(self.reference), (s.critic_steps, b)))]
        if s.replay:
            self.replay = torch.cat([fake.detach(), self.replay])[: s.replay]
        for k in range(s.critic_steps):
            pool = fake if k == 0 or not s.replay else self.replay[torch.from_numpy(rng.integers(0, len(self.replay), b))]
            critic_loss = _critic_loss(self.critic, real[k], pool, s.r1)
            self.critic_opt.zero_grad()
            critic_loss.backward()
            self.critic_opt.step()
        with torch.no_grad():
            start_targets, _, start_logits = self.start.stages(e, noise_energy, noise_shape, directions=d)
        anchor = F.mse_loss(logits, start_logits) + F.mse_loss(torch.log1p(targets), torch.log1p(start_targets))
        d_fake = self.critic(fake)
        adversarial = F.softplus(-d_fake).mean()
        loss = adversarial + s.anchor * anchor
        if s.feature_matching:
            matching = self._feature_matching(fake, torch.from_numpy(rows), d)
            loss = loss + s.feature_matching * matching
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        with torch.no_grad():
            for average, p in zip(self.ema, self.params, strict=True):
                average.lerp_(p, 1 - s.ema_decay)
        figures = {"critic_loss": critic_loss, "adversarial": adversarial, "anchor": anchor, "critic_fake": torch.sigmoid(d_fake).mean()}
        if s.feature_matching:
            figures["feature_matching"] = matching
        return {k: float(v.detach()) for k, v in figures.items()}

    def _feature_matching(self, fake: torch.Tensor, rows: torch.Tensor, directions: torch.Tensor | None) -> torch.Tensor:
        """Unbiased estimate of the summed squared means of ``(generated - training) x condition``: the product of the
        two half-batches' means. The training showers are those of the generated ones' rows (same energy and
        direction); conditions: 1, standardised ``log E``, the direction's unit vector."""
        conditions = [torch.ones_like(self.log_e[rows]), self.log_e[rows]]
        if directions is not None:
            conditions += list(direction_features(directions).unbind(1))
        weighted = (fake - self.reference[rows])[:, None, :] * torch.stack(conditions, dim=1)[:, :, None]
        half = len(rows) // 2
        return (weighted[:half].mean(0) * weighted[half : 2 * half].mean(0)).sum()

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Checkpoint tensors and JSON."""
        tensors = {f"param.{n}": p for n, p in zip(self.names, self.params, strict=True)}
        tensors |= {f"ema.{n}": p for n, p in zip(self.names, self.ema, strict=True)}
        tensors |= {f"critic.{k}": v for k, v in self.critic.state_dict().items()} | {"replay": self.replay}
        meta: dict[str, Any] = {}
        for name, opt in (("opt", self.opt), ("critic_opt", self.critic_opt)):
            flat, meta[name] = optimizer_to_flat(opt)
            tensors |= {f"{name}.{k}": v for k, v in flat.items()}
        return tensors, meta

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        with torch.no_grad():
            for n, p, average in zip(self.names, self.params, self.ema, strict=True):
                p.copy_(tensors[f"param.{n}"])
                average.copy_(tensors[f"ema.{n}"])
        self.critic.load_state_dict({k[len("critic.") :]: v for k, v in tensors.items() if k.startswith("critic.")})
        self.replay = tensors["replay"]
        for name, opt in (("opt", self.opt), ("critic_opt", self.critic_opt)):
            optimizer_from_flat(opt, {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(f"{name}.")}, meta[name])

    def weights(self) -> dict[str, torch.Tensor]:
        """The model directory's tensors: ``raw.*`` the tuned networks, ``ema.*`` their moving average."""
        raw = {f"raw.{k}": v.detach().clone() for k, v in self.pipe.pair.state_dict().items()}
        with torch.no_grad():
            for average, p in zip(self.ema, self.params, strict=True):
                p.copy_(average)
        return raw | {f"ema.{k}": v.detach().clone() for k, v in self.pipe.pair.state_dict().items()}


def _reference(model: Any, data: Path, n_showers: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The training showers' high-level vectors, incident energies and (for a direction-conditioned model) directions,
    whose unit vectors then follow the high-level columns: the critic compares showers at equal directions."""
    from calogen.features import compute_features, high_level_vector
    from calogen.io import ShowerFile

    with ShowerFile(data, model.geometry) as f:
        n = f.n_showers if n_showers is None else min(n_showers, f.n_showers)
        showers = f.read(0, n)
    energies = showers.energies.reshape(-1)
    vector = high_level_vector(compute_features(energies, showers.showers, model.geometry)).astype(np.float32)
    directions = showers.directions if model.config.directions else None
    if directions is not None:
        vector = np.concatenate([vector, direction_features(torch.from_numpy(directions.astype(np.float32))).numpy()], axis=1)
    return vector, energies, directions


def _identity(model_dir: Path, data: Path, n_showers: int | None, settings: TuneSettings) -> dict[str, Any]:
    """What a resumed tune must share with the one that wrote its checkpoints."""
    return {"model_weights_sha256": file_sha256(model_dir / "weights.safetensors"), "data_sha256": file_sha256(data),
            "n_showers": n_showers, "settings": dataclasses.asdict(settings)}  # fmt: skip


def _resume(work: Path, tuner: _Tuner, identity: dict[str, Any]) -> tuple[int, list[dict[str, float]]]:
    """Restore the newest checkpoint in ``work``: the steps it had taken and its history (0 and [] without one)."""
    path = latest_checkpoint(work)
    if path is None:
        return 0, []
    try:
        meta = json.loads((path / "state.json").read_text())
        tensors = load_file(str(path / "state.safetensors"))
    except Exception as exc:  # OSError, ValueError, or safetensors' own error for a damaged file
        raise TuneError(f"checkpoint {path} cannot be read ({exc}); delete {work} to start again") from None
    if not isinstance(meta, dict) or meta.get("identity") != json.loads(json.dumps(identity)):
        raise TuneError(f"{work} holds a tune with other settings, model or data; delete it or rerun the same command")
    tuner.restore(tensors, meta)
    return int(meta["step"]), list(meta["history"])


def tune_adversarial(
    model_dir: str | os.PathLike[str], data: str | os.PathLike[str], out: str | os.PathLike[str], *,
    settings: TuneSettings = TuneSettings(), n_showers: int | None = None, resume: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Tune the model in ``model_dir`` against its training showers ``data`` and write the result to ``out``.

    ``out`` must not exist; the work (checkpoints) lives in ``out.partial`` until the last step, and
    ``resume=True`` continues it. Returns the record written to ``out/adversarial.json``.
    """
    from calogen.models.generator import load

    model_dir, data, out = Path(model_dir), Path(data), Path(out)
    work = out.with_name(out.name + ".partial")
    if out.exists():
        raise TuneError(f"{out} exists; choose a new --out (a tune never overwrites a model)")
    if work.exists() and not resume:
        raise TuneError(f"{work} holds an unfinished tune; pass --resume to continue it, or delete it")
    model = load(model_dir)
    if getattr(model, "refiner", None) is not None or model.geometry.kind != "cylindrical":
        raise TuneError(f"{model_dir}: adversarial tuning needs a flow model of a cylindrical readout")
    reference, energies, directions = _reference(model, data, n_showers)
    tuner = _Tuner(model, reference, energies, directions, settings)
    identity = _identity(model_dir, data, n_showers, settings)
    done, history = _resume(work, tuner, identity) if work.exists() else (0, [])
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for step in range(done, settings.steps):
        figures = tuner.step(step)
        if (step + 1) % 25 == 0 or step + 1 == settings.steps:
            history.append({"step": step + 1, **{k: round(v, 5) for k, v in figures.items()}})
            if log is not None:
                log(f"tune step {step + 1}/{settings.steps}: critic loss {figures['critic_loss']:.4f}, "
                    f"critic on generated {figures['critic_fake']:.3f}, anchor {figures['anchor']:.2e} ({time.perf_counter() - started:.0f} s)")  # fmt: skip
        if (step + 1) % settings.checkpoint_every == 0 and step + 1 < settings.steps:
            tensors, meta = tuner.state()
            write_checkpoint(work, step + 1, tensors, {**meta, "step": step + 1, "identity": identity, "history": history})
    return _finish(model_dir, work, out, tuner, identity, history, data)


def _finish(model_dir: Path, work: Path, out: Path, tuner: _Tuner, identity: dict[str, Any], history: list[dict[str, float]], data: Path) -> dict[str, Any]:
    """Copy the model into ``work`` with the tuned weights and the record, drop the checkpoints, rename to ``out``.
    An occupancy stage is copied as it is (its counts depend on the ring energies alone)."""
    shutil.copytree(model_dir, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoints", "adversarial.json"))
    atomic_write_tensors(work / "weights.safetensors", tuner.weights())
    record = {"format": FORMAT, "source": {"directory": str(model_dir), "weights_sha256": identity["model_weights_sha256"]},
              "data": {"path": str(data), "sha256": identity["data_sha256"], "n_showers": len(tuner.energies)},
              "settings": identity["settings"], "history": history}  # fmt: skip
    atomic_write_json(work / "adversarial.json", record)
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
    os.replace(work, out)
    return record
