"""One-step students of a flow-matching teacher: consistency models and average-velocity models.

Both keep the flow-matching path of :mod:`calogen.models.flow_matching` (data at ``t = 0``, noise at
``t = 1``, ``x_t = (1 - t) x_0 + t eps``) and the teacher's networks; a student starts as a copy of the
teacher's weights and is then trained to jump, so at step 0 it generates exactly what the teacher does
at one Euler step. Given a teacher (:meth:`Student.set_teacher`) the losses distil its probability-flow
ODE; without one they train from data alone (consistency training; average velocities built up from
the conditional velocity ``eps - x_0``).

* **Consistency model** (Song et al., arXiv:2303.01469): ``f(x_t, t) = x_t - t F(x_t, t)`` estimates the
  end point ``x_0`` of the trajectory through ``x_t``; ``F`` has the teacher velocity's form, so
  ``f(x, 0) = x`` holds by construction. As a denoiser it returns ``F``, the velocity that points from
  ``x_t`` to ``f``: an Euler step from ``t`` to ``s`` lands on ``(1 - s) f + s eps_hat`` with
  ``eps_hat`` the noise the model implies — deterministic multistep consistency sampling; at 1 NFE
  it is ``f(x_1, 1)``. Loss on a grid of ``n_intervals``: ``|f(x_t, t) - sg f(x_s, s)|^2`` for adjacent
  grid times ``s < t``, with ``x_s`` one midpoint step of the teacher from ``x_t`` (or, without one, the
  same straight path at ``s``).
* **Average velocity** (the quantity of MeanFlow, Geng et al., arXiv:2505.13447): ``u(x_t, r, t)`` is
  the mean velocity over ``[r, t]``, so ``x_r = x_t - (t - r) u`` in one evaluation (the ``jump``
  sampler). It is trained by the semigroup rule of shortcut models (Frans et al., arXiv:2410.12557):
  a jump over ``d`` equals two jumps over ``d / 2``, so the target is the mean of the stop-gradient
  student's two half jumps, and the shortest interval's halves are steps of the teacher velocity
  (without a teacher: the conditional velocity ``eps - x_0``). MeanFlow's own rule,
  ``u = v - (t - r) du/dt`` through a Jacobian-vector product, diverged when fine-tuning calogen's
  teachers (the ``du/dt`` of the student feeds back into its target; ``docs/training.md``). The
  interval enters the network as :data:`INTERVAL_FEATURES` extra condition columns, zero for
  ``r = t``, whose weights start at zero.

The energy and radial networks of a distilled student are not trained by these rules: they are
regressed on a bank of the teacher's solves (:mod:`calogen.train.one_step`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from calogen.models.flow_matching import Denoiser, FlowMatching

__all__ = ["INTERVAL_FEATURES", "STUDENT_OBJECTIVES", "AverageVelocity", "ConsistencyModel", "Student", "interval_features", "widen_from"]

INTERVAL_FEATURES = 3
"""Condition columns an average-velocity network receives for the interval ``d = t - r``: ``d, sin(pi d), 1 - cos(pi d)``."""


def interval_features(t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The interval columns ``(B, INTERVAL_FEATURES)`` for times ``t, r (B,)``; all zero when ``r = t``."""
    d = (t - r).reshape(-1, 1)
    return torch.cat([d, torch.sin(math.pi * d), 1 - torch.cos(math.pi * d)], dim=1)


def _column(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (x.ndim - 1)))


class Student(FlowMatching):
    """A flow-matching denoiser trained to take large steps; optionally holds a frozen teacher.

    Args:
        net: the network (``(x, t, cond) -> (B, *)``).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__(net)
        self._teacher: tuple[Denoiser, ...] = ()  # a tuple: not a submodule, so never trained or saved

    def set_teacher(self, teacher: Denoiser) -> None:
        """Distil ``teacher`` (frozen here) instead of training from data alone."""
        teacher.requires_grad_(False).eval()
        self._teacher = (teacher,)

    @property
    def teacher(self) -> Denoiser | None:
        return self._teacher[0] if self._teacher else None

    def _noise(self, x0: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)

    def _uniform(self, n: int, x0: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.rand(n, generator=generator, device=x0.device, dtype=x0.dtype)


class ConsistencyModel(Student):
    """Consistency model on the flow-matching path (see the module docstring).

    Args:
        net: the network, initialised from the teacher's velocity network.
        n_intervals: grid of the consistency loss (``t_n = n / n_intervals``).
    """

    def __init__(self, net: nn.Module, *, n_intervals: int = 16) -> None:
        super().__init__(net)
        self.n_intervals = n_intervals

    def estimate(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``f(x, t)``, the estimated trajectory end point ``x_0``."""
        return x - _column(t, x) * self.net(x, t, cond)

    def loss(self, x0: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = self._noise(x0, generator)
        n = (self._uniform(x0.shape[0], x0, generator) * self.n_intervals).floor().clamp(max=self.n_intervals - 1) + 1
        t, s = n / self.n_intervals, (n - 1) / self.n_intervals
        xt = (1 - _column(t, x0)) * x0 + _column(t, x0) * eps
        if self.teacher is None:
            xs = (1 - _column(s, x0)) * x0 + _column(s, x0) * eps
        else:
            h = _column(s - t, x0)
            with torch.no_grad():
                d = self.teacher(xt, t, cond)
                xs = xt + h * self.teacher(xt + 0.5 * h * d, t + 0.5 * (s - t), cond)
        with torch.no_grad():
            target = self.estimate(xs, s, cond)
        return (self.estimate(xt, t, cond) - target).square().flatten(1).mean(1)


class AverageVelocity(Student):
    """Average-velocity model ``u(x_t, r, t)`` trained by the semigroup rule (see the module docstring).

    ``forward(x, t, cond, r)`` is ``u``; without ``r`` it is the instantaneous velocity ``u(x, t, t)``.
    Training draws the interval ``d = t - r``: a quarter of the rows ``d = 0`` at a logit-normal ``t``
    (the teacher's velocity itself), the rest ``d = 2^-k`` with ``k`` uniform in ``0..levels`` and ``t``
    a multiple of ``d`` (so the 1- and 2-step jumps ``1 -> 0``, ``1 -> 1/2``, ``1/2 -> 0`` are trained
    directly).

    Args:
        net: the network, its condition widened by :data:`INTERVAL_FEATURES` columns (:func:`widen_from`).
        levels: the shortest trained interval is ``2^-levels``; its halves are teacher steps.
    """

    def __init__(self, net: nn.Module, *, levels: int = 6) -> None:
        super().__init__(net)
        self.levels = levels

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, t, torch.cat([cond, interval_features(t, t if r is None else r)], dim=1))

    def _times(self, x0: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(t, d)`` for a batch like ``x0``."""
        b = x0.shape[0]
        k = (self._uniform(b, x0, generator) * (self.levels + 1)).floor().clamp(max=self.levels)
        d = torch.pow(2.0, -k)
        t = ((self._uniform(b, x0, generator) / d).floor() + 1) * d  # a multiple of d in (0, 1]
        plain = self._uniform(b, x0, generator) < 0.25
        t = torch.where(plain, torch.sigmoid(torch.randn(b, generator=generator, device=x0.device, dtype=x0.dtype)), t.clamp(max=1.0))
        return t, torch.where(plain, torch.zeros_like(d), d)

    @torch.no_grad()
    def _half(self, x: torch.Tensor, t: torch.Tensor, half: torch.Tensor, cond: torch.Tensor, base: torch.Tensor, conditional: torch.Tensor) -> torch.Tensor:
        """The average velocity over ``[t - half, t]``: where ``base`` the teacher's velocity (without a teacher the
        ``conditional`` velocity), elsewhere the student's; each row is evaluated by that network only."""
        out = conditional.clone()
        if self._teacher and base.any():
            out[base] = self._teacher[0](x[base], t[base], cond[base])
        rest = ~base
        if rest.any():
            out[rest] = self(x[rest], t[rest], cond[rest], (t - half)[rest])
        return out

    def loss(self, x0: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = self._noise(x0, generator)
        t, d = self._times(x0, generator)
        xt = (1 - _column(t, x0)) * x0 + _column(t, x0) * eps
        half = 0.5 * d
        base = d < 2.0 ** (1 - self.levels)  # the shortest interval (and d = 0): its halves are teacher steps
        first = self._half(xt, t, half, cond, base, eps - x0)
        second = self._half(xt - _column(half, x0) * first, t - half, half, cond, base, eps - x0)
        target = torch.where(_column(d > 0, x0), 0.5 * (first + second), first)
        return (self(xt, t, cond, t - d) - target).square().flatten(1).mean(1)


STUDENT_OBJECTIVES: dict[str, type[Student]] = {"consistency": ConsistencyModel, "average-velocity": AverageVelocity}
"""Objective name -> student denoiser."""


def widen_from(student: nn.Module, teacher: nn.Module) -> None:
    """Copy ``teacher``'s parameters and buffers into ``student``; a tensor that is wider in its last
    dimension (the interval columns of an average-velocity network) gets the teacher's values first and zeros after them.

    Raises:
        ValueError: the two differ in anything else.
    """
    mine, theirs = student.state_dict(), teacher.state_dict()
    if set(mine) != set(theirs):
        raise ValueError(f"student and teacher differ in parameters: {sorted(set(mine) ^ set(theirs))[:4]}")
    with torch.no_grad():
        for key, value in theirs.items():
            target = mine[key]
            if target.shape == value.shape:
                target.copy_(value)
            elif target.ndim == value.ndim and target.shape[:-1] == value.shape[:-1] and target.shape[-1] > value.shape[-1]:
                target.zero_()
                target[..., : value.shape[-1]] = value
            else:
                raise ValueError(f"{key}: student shape {tuple(target.shape)} cannot take the teacher's {tuple(value.shape)}")
