"""ODE samplers as pure functions ``(denoiser, x, schedule, *, cond) -> x``.

``denoiser(x, t, cond)`` returns ``dx/dt`` (see :class:`~calogen.models.flow_matching.Denoiser`); the
schedule holds the times ``t_0 > t_1 > ... > t_n`` (a tensor, or Python floats so that a traced
graph holds them as constants); step ``i`` has size ``h_i = t_{i+1} - t_i``. Each
sampler is one loop with no hidden state; randomness only enters through the starting point ``x``.
:func:`solve` picks the number of steps for a budget of network evaluations (NFE).

* Euler: ``x += h d(x, t)`` — 1 NFE per step.
* Heun (trapezoidal): ``x' = x + h d_0``, ``x += h (d_0 + d(x', t'))/2`` — 2 NFE per step.
* Midpoint: ``x += h d(x + h d_0 / 2, t + h/2)`` — 2 NFE per step.
* Adams-Bashforth 2 (variable step): ``x += h ((1 + r/2) d_i - (r/2) d_{i-1})``, ``r = h_i / h_{i-1}``,
  Euler first — 1 NFE per step.
* Jump: ``x += h u(x, t -> t_next)`` with an average-velocity model
  (:class:`~calogen.models.students.AverageVelocity`, called as ``denoiser(x, t, cond, t_next)``) — 1 NFE per step,
  exact for a perfect model.

Two-stage samplers given an odd NFE take a plain Euler step last.

Reference: Karras et al., arXiv:2206.00364 (Algorithm 1); Hairer, Nørsett & Wanner, "Solving Ordinary
Differential Equations I", II.1 and III.1.

Example:
    >>> f = lambda x, t, cond: -x          # dx/dt = -x, so x(0) = x(1) * e
    >>> x = solve(f, torch.ones(1, 1), torch.linspace(1.0, 0.0, 33), sampler="heun", nfe=64, cond=None)
    >>> round(float(x), 3)
    2.718
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from calogen.errors import CalogenError

__all__ = ["SAMPLERS", "adams_bashforth2", "euler", "heun", "jump", "midpoint", "solve", "steps_for_nfe"]

Derivative = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
Schedule = Sequence[float] | torch.Tensor


def _times(t: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The scalar time ``t`` as a ``(B,)`` tensor matching ``x`` (one operation: at batch 1 each one counts)."""
    return x.new_full((x.shape[0],), t)


def euler(denoiser: Derivative, x: torch.Tensor, schedule: Schedule, *, cond: torch.Tensor | None) -> torch.Tensor:
    """Explicit Euler over ``schedule``."""
    for t, t_next in zip(schedule[:-1], schedule[1:], strict=True):
        x = x + (t_next - t) * denoiser(x, _times(t, x), cond)
    return x


def _two_stage(
    second: Callable[[Derivative, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
    denoiser: Derivative,
    x: torch.Tensor,
    schedule: Schedule,
    cond: torch.Tensor | None,
    last_euler: bool,
) -> torch.Tensor:
    """The loop shared by two-stage solvers: ``second(denoiser, x, t, t_next, d, cond)`` completes a step
    from the slope ``d`` at ``t``; with ``last_euler`` the final step is a plain Euler step."""
    n = len(schedule) - 1
    for i, (t, t_next) in enumerate(zip(schedule[:-1], schedule[1:], strict=True)):
        d = denoiser(x, _times(t, x), cond)
        if last_euler and i == n - 1:
            x = x + (t_next - t) * d
        else:
            x = second(denoiser, x, t, t_next, d, cond)
    return x


def _heun_stage(denoiser: Derivative, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, d: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    h = t_next - t
    d_next = denoiser(x + h * d, _times(t_next, x), cond)
    return x + h * 0.5 * (d + d_next)


def _midpoint_stage(denoiser: Derivative, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, d: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    h = t_next - t
    return x + h * denoiser(x + 0.5 * h * d, _times(t + 0.5 * h, x), cond)


def heun(
    denoiser: Derivative, x: torch.Tensor, schedule: Schedule, *, cond: torch.Tensor | None, last_euler: bool = False
) -> torch.Tensor:
    """Heun's second-order method; ``last_euler`` makes the final step a plain Euler step."""
    return _two_stage(_heun_stage, denoiser, x, schedule, cond, last_euler)


def midpoint(
    denoiser: Derivative, x: torch.Tensor, schedule: Schedule, *, cond: torch.Tensor | None, last_euler: bool = False
) -> torch.Tensor:
    """Explicit midpoint method; ``last_euler`` makes the final step a plain Euler step."""
    return _two_stage(_midpoint_stage, denoiser, x, schedule, cond, last_euler)


def adams_bashforth2(denoiser: Derivative, x: torch.Tensor, schedule: Schedule, *, cond: torch.Tensor | None) -> torch.Tensor:
    """Two-step Adams-Bashforth with variable steps, started by one Euler step."""
    d_prev: torch.Tensor | None = None
    h_prev = None
    for t, t_next in zip(schedule[:-1], schedule[1:], strict=True):
        h = t_next - t
        d = denoiser(x, _times(t, x), cond)
        if d_prev is None:
            x = x + h * d
        else:
            r = h / h_prev
            x = x + h * ((1 + 0.5 * r) * d - 0.5 * r * d_prev)
        d_prev, h_prev = d, h
    return x


def jump(denoiser: Callable[..., torch.Tensor], x: torch.Tensor, schedule: Schedule, *, cond: torch.Tensor | None) -> torch.Tensor:
    """Jumps of an average-velocity model ``denoiser(x, t, cond, t_next)`` over ``schedule``."""
    for t, t_next in zip(schedule[:-1], schedule[1:], strict=True):
        x = x + (t_next - t) * denoiser(x, _times(t, x), cond, _times(t_next, x))
    return x


SAMPLERS: dict[str, tuple[Callable[..., torch.Tensor], int]] = {
    "euler": (euler, 1),
    "heun": (heun, 2),
    "midpoint": (midpoint, 2),
    "ab2": (adams_bashforth2, 1),
    "jump": (jump, 1),
}
"""Sampler name -> (function, network evaluations per step)."""


def steps_for_nfe(sampler: str, nfe: int) -> tuple[int, bool]:
    """Number of steps and whether the last is an Euler step, for ``nfe`` network evaluations."""
    if sampler not in SAMPLERS:
        raise CalogenError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
    if nfe < 1:
        raise CalogenError(f"nfe must be >= 1, got {nfe}")
    per_step = SAMPLERS[sampler][1]
    steps = math.ceil(nfe / per_step)
    return steps, steps * per_step != nfe


def solve(
    denoiser: Derivative,
    x: torch.Tensor,
    schedule: Schedule,
    *,
    sampler: str,
    nfe: int,
    cond: torch.Tensor | None,
) -> torch.Tensor:
    """Integrate from ``x`` with ``sampler`` using exactly ``nfe`` evaluations.

    Args:
        denoiser: ``dx/dt``.
        x: starting point ``(B, *)`` at ``schedule[0]``.
        schedule: times ``(steps_for_nfe(sampler, nfe)[0] + 1,)``.
        sampler: a key of :data:`SAMPLERS`.
        nfe: network evaluations.
        cond: condition passed to the denoiser.
    """
    steps, last_euler = steps_for_nfe(sampler, nfe)
    if len(schedule) != steps + 1:
        raise ValueError(f"{sampler} with nfe={nfe} needs {steps + 1} times, got {len(schedule)}")
    fn = SAMPLERS[sampler][0]
    if last_euler:
        return fn(denoiser, x, schedule, cond=cond, last_euler=True)
    return fn(denoiser, x, schedule, cond=cond)
