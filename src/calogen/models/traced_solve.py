"""The energy and radial ODE solves of a generator, run as TorchScript traces during inference.

The energy and radial networks are small MLPs: at batch 1 their solves (16 evaluations each for the
shipped model) spend most of their time in the Python interpreter between the kernels, about 4 ms each
of a 15 ms shower (``benchmarks/bench_latency.py``). A trace of the whole solve runs the same kernels
in the same order without the interpreter, so it returns the same bits as the eager solve at every
batch size (``tests/test_traced_solve.py``) at about a third of the cost per call. The trace is built
on first use per dtype and device, and only under :func:`torch.inference_mode`; training, gradients,
tracing and ONNX export run the eager solve. The shape network gains nothing from a trace (its
convolutions dominate) and is left eager.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from calogen.models.flow_matching import Denoiser
from calogen.models.samplers import solve

__all__ = ["TracedSolve"]


class _Solve(nn.Module):
    """The solve as a module, so that a trace keeps the denoiser's parameters as parameters (shared, not copied)."""

    def __init__(self, denoiser: Denoiser, schedule: Sequence[float], sampler: str, nfe: int) -> None:
        super().__init__()
        self.denoiser, self.schedule, self.sampler, self.nfe = denoiser, list(schedule), sampler, nfe

    def forward(self, start: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return solve(self.denoiser, start, self.schedule, sampler=self.sampler, nfe=self.nfe, cond=cond)


class TracedSolve:
    """``solve(denoiser, start, schedule, sampler=sampler, nfe=nfe, cond=cond)`` as a callable ``(start, cond)``.

    Not a module itself, so the denoiser stays registered once, where it lives (the model pair). The trace
    shares the denoiser's parameters: updating them in place (an optimiser step, ``load_state_dict``) is seen.
    """

    def __init__(self, denoiser: Denoiser, schedule: Sequence[float], sampler: str, nfe: int) -> None:
        self._solve = (_Solve(denoiser, schedule, sampler, nfe),)  # a tuple: never a submodule of the owner
        self._traces: dict[tuple[torch.dtype, torch.device], torch.jit.ScriptModule] = {}

    def __call__(self, start: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        eager = self._solve[0]
        if not torch.is_inference_mode_enabled() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return eager(start, cond)
        key = (start.dtype, start.device)
        trace = self._traces.get(key)
        if trace is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                trace = self._traces[key] = torch.jit.trace(eager, (start, cond), check_trace=False)
        return trace(start, cond)
