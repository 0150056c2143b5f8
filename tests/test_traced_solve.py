"""The traced energy and radial solves return the eager solve's bits and follow the weights they share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _model_data import one_thread  # noqa: F401

from calogen.models import load
from calogen.models.samplers import solve
from calogen.models.traced_solve import TracedSolve

pytestmark = pytest.mark.usefixtures("one_thread")
SHIPPED = Path(__file__).resolve().parents[1] / "src" / "calogen" / "data" / "pretrained" / "cpu-small-ds2"


@pytest.fixture(scope="module")
def pipeline():
    return load(SHIPPED)._pipeline(2, "euler")


def _eager(pipe, name: str, start: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    return solve(getattr(pipe.pair, name), start, pipe.energy_schedule, sampler=pipe.energy_sampler, nfe=pipe.energy_nfe, cond=cond)


@pytest.mark.parametrize("name", ["energy", "radial"])
def test_the_trace_gives_the_eager_solves_bits_at_every_batch_size(pipeline, name):
    pre = pipeline.preprocessor
    dim, cond_dim = (pre.layer_dim, 1) if name == "energy" else (pre.radial_dim, 1 + pre.layer_dim)
    traced = TracedSolve(getattr(pipeline.pair, name), pipeline.energy_schedule, pipeline.energy_sampler, pipeline.energy_nfe)
    gen = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for batch in (1, 7, 300, 1):  # traced at batch 1, then other sizes, then warm
            start, cond = torch.randn(batch, dim, generator=gen), torch.rand(batch, cond_dim, generator=gen)
            assert traced(start, cond).numpy().tobytes() == _eager(pipeline, name, start, cond).numpy().tobytes()
    assert len(traced._traces) == 1


def test_the_trace_follows_weights_updated_in_place_and_is_not_used_for_gradients():
    torch.manual_seed(0)
    model = load(SHIPPED)
    denoiser = model.pair.energy
    traced = TracedSolve(denoiser, [1.0, 0.5, 0.0], "euler", 2)
    start, cond = torch.randn(3, model.preprocessor.layer_dim), torch.rand(3, 1)
    with torch.inference_mode():
        before = traced(start, cond)
    with torch.no_grad():
        for param in denoiser.parameters():
            param.mul_(1.01)
    with torch.inference_mode():
        after = traced(start, cond)
        eager = solve(denoiser, start, [1.0, 0.5, 0.0], sampler="euler", nfe=2, cond=cond)
    assert not torch.equal(before, after) and torch.equal(after, eager)

    fresh = TracedSolve(denoiser.requires_grad_(True), [1.0, 0.0], "euler", 1)
    out = fresh(start, cond)  # grad mode: the eager solve, differentiable, no trace built
    out.sum().backward()
    assert next(denoiser.parameters()).grad is not None and not fresh._traces


def test_generation_is_unchanged_by_the_trace():
    model = load(SHIPPED)
    e = np.array([2e4, 3e3, 7e4])
    noise_energy, noise_shape = model.draw_noise(3, seed=4)
    pipe = model._pipeline(2, "euler")
    with torch.no_grad():  # not inference mode: the eager solves
        eager = pipe(torch.from_numpy(e[:, None]).float(), torch.from_numpy(noise_energy), torch.from_numpy(noise_shape))
    assert model.sample_with_noise(e, noise_energy, noise_shape, nfe=2).tobytes() == eager.numpy().tobytes()
