"""One-step energy and radial networks of a student, regressed on a bank of the teacher's own solves.

The layer energies and ring fractions of a shower are low-dimensional (``1 + L`` and ``L * R`` numbers),
so the teacher's energy and radial networks are cheap to integrate accurately: the teacher solves them
with its own sampler and NFE (``model.energy_sampler``, ``model.energy_nfe``). A student replaces
both solves by one evaluation. Consistency and semigroup rules alone left these one-step outputs
measurably too narrow (``docs/training.md``), so a student learns them as a map: the bank holds
``bank_size`` solves of the teacher, noise -> layer vector and noise -> radial vector (conditioned on
incident energies drawn from the training showers), and the student's one-step output is regressed on
them with a mean squared error (knowledge distillation of an iterative sampler, Luhman & Luhman,
arXiv:2101.02388). The regression runs once, before the shape network's training, with its own steps,
batch and learning rate (``train.one_step_*``); its validation error is logged to ``history.jsonl``.

Everything is a function of ``train.seed``: the bank's energies and noise, the batches and the
initial weights, so the same seed gives the same weights.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from calogen.generator import derive_seed
from calogen.models.flow_matching import Denoiser
from calogen.models.pair import ModelPair
from calogen.models.samplers import solve, steps_for_nfe
from calogen.train.config import TrainConfig

__all__ = ["SolveBank", "build_bank", "fit_one_step", "one_step_errors"]

_CHUNK_ROWS = 200_000
"""Largest number of network rows (showers times layers for the radial network) solved at once."""
RADIAL_SHARE = 4
"""The radial bank and batches are this many times smaller than the energy ones: each radial row is ``L`` network rows."""


@dataclass(frozen=True)
class SolveBank:
    """The teacher's solves: per row the condition, the starting noise and the end point, for the energy
    network (``cond`` -> ``layers``) and, with a radial network, the radial one (``[cond, layers]`` -> ``radial``)
    for the first ``len(radial)`` rows."""

    cond: torch.Tensor
    noise_layers: torch.Tensor
    layers: torch.Tensor
    noise_radial: torch.Tensor | None
    radial: torch.Tensor | None

    def __len__(self) -> int:
        return self.cond.shape[0]


@torch.no_grad()
def _teacher_solve(denoiser: Denoiser, noise: torch.Tensor, cond: torch.Tensor, sampler: str, nfe: int, chunk: int) -> torch.Tensor:
    schedule = denoiser.schedule(steps_for_nfe(sampler, nfe)[0])
    parts = [solve(denoiser, denoiser.prior(noise[s : s + chunk]), schedule, sampler=sampler, nfe=nfe, cond=cond[s : s + chunk])
             for s in range(0, noise.shape[0], chunk)]  # fmt: skip
    return torch.cat(parts)


def build_bank(teacher: ModelPair, pool_cond: torch.Tensor, size: int, seed: int) -> SolveBank:
    """``size`` solves of ``teacher`` with its own energy sampler and NFE, conditions drawn (with replacement)
    from ``pool_cond`` (the scaled incident energies of the training showers, ``(N, 1)``)."""
    cfg = teacher.config
    sampler, nfe = cfg.energy_sampler or cfg.sampler, cfg.energy_nfe or cfg.nfe
    gen = torch.Generator().manual_seed(derive_seed(seed, 3))
    cond = pool_cond[torch.randint(pool_cond.shape[0], (size,), generator=gen)]
    noise_layers = torch.randn(size, teacher.energy.net.out.out_features, generator=gen)
    layers = _teacher_solve(teacher.energy, noise_layers, cond, sampler, nfe, _CHUNK_ROWS)
    if teacher.radial is None:
        return SolveBank(cond, noise_layers, layers, None, None)
    radial_net = teacher.radial.net
    n_radial = max(1, size // RADIAL_SHARE)
    noise_radial = torch.randn(n_radial, radial_net.n_layers * radial_net.n_r, generator=gen)
    radial_cond = torch.cat([cond[:n_radial], layers[:n_radial]], dim=1)
    radial = _teacher_solve(teacher.radial, noise_radial, radial_cond, sampler, nfe, max(1, _CHUNK_ROWS // radial_net.n_layers))
    return SolveBank(cond, noise_layers, layers, noise_radial, radial)


def _one_step(denoiser: Denoiser, sampler: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    schedule = denoiser.schedule(1)
    return lambda noise, cond: solve(denoiser, denoiser.prior(noise), schedule, sampler=sampler, nfe=1, cond=cond)


def one_step_errors(
    student: ModelPair, bank: SolveBank, rows: torch.Tensor, radial_rows: torch.Tensor, sampler: str
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Mean squared errors ``(energy, radial)`` of the student's one-step outputs on bank ``rows`` and
    ``radial_rows`` (radial: zero without a radial network)."""
    energy = (_one_step(student.energy, sampler)(bank.noise_layers[rows], bank.cond[rows]) - bank.layers[rows]).square().mean()
    if student.radial is None or bank.radial is None or bank.noise_radial is None:
        return energy, torch.zeros(())
    rows = radial_rows
    radial_cond = torch.cat([bank.cond[rows], bank.layers[rows]], dim=1)
    radial = (_one_step(student.radial, sampler)(bank.noise_radial[rows], radial_cond) - bank.radial[rows]).square().mean()
    return energy, radial


def fit_one_step(
    student: ModelPair, bank: SolveBank, cfg: TrainConfig, *, log: Callable[[dict[str, float]], None] | None = None,
    progress: bool = False,
) -> None:  # fmt: skip
    """Regress the one-step energy (and radial) outputs of ``student`` on ``bank`` for ``cfg.one_step_steps``
    steps (AdamW, warm-up and cosine decay, gradient clipping); the networks end with the exponential moving
    average of their weights (``cfg.one_step_ema_decay``) and frozen (``requires_grad`` off).

    Validation: the first twentieth of the energy and of the radial rows are never trained on; ``log``
    receives their errors every ``cfg.eval_every`` steps.
    """
    sampler = student.config.energy_sampler or student.config.sampler
    networks = [student.energy] + ([student.radial] if student.radial is not None else [])
    params = [p.requires_grad_(True) for net in networks for p in net.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.one_step_lr, weight_decay=0.0)
    ema = copy.deepcopy(student).requires_grad_(False)
    ema_params = [p for net in ([ema.energy] + ([ema.radial] if ema.radial is not None else [])) for p in net.parameters()]
    sizes = (len(bank), len(bank.radial) if bank.radial is not None else len(bank))
    n_val = tuple(max(1, n // 20) for n in sizes)
    val_rows = (torch.arange(n_val[0]), torch.arange(n_val[1]))
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, 4))
    steps, warmup = cfg.one_step_steps, max(1, cfg.one_step_steps // 30)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, unit="step", desc="one-step energy")
    for step in range(steps):
        lr = cfg.one_step_lr * min(1.0, (step + 1) / warmup) * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        rows = torch.randint(n_val[0], sizes[0], (cfg.one_step_batch_size,), generator=gen)
        radial_rows = torch.randint(n_val[1], sizes[1], (max(1, cfg.one_step_batch_size // RADIAL_SHARE),), generator=gen)
        energy, radial = one_step_errors(student, bank, rows, radial_rows, sampler)
        opt.zero_grad(set_to_none=True)
        (energy + radial).backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            for e, r in zip(ema_params, params, strict=True):
                e.lerp_(r, 1 - cfg.one_step_ema_decay)
        if bar is not None:
            bar.update(1)
        if log is not None and ((step + 1) % cfg.eval_every == 0 or step + 1 == steps):
            with torch.no_grad():
                val_e, val_r = one_step_errors(ema, bank, *val_rows, sampler)
            log({"step": 0, "one_step": step + 1, "loss_energy": energy.item(), "loss_radial": radial.item(), "lr": lr,
                 "val_energy": val_e.item(), "val_radial": val_r.item()})  # fmt: skip
    if bar is not None:
        bar.close()
    with torch.no_grad():
        for e, r in zip(ema_params, params, strict=True):
            r.copy_(e).requires_grad_(False)
