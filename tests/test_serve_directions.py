"""A direction-conditioned model behind the dynamic batcher: requests at different directions merged into one batch."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest
from _model_data import one_thread  # noqa: F401
from test_export_directions import _train

from calogen.models.generator import FlowModel, load
from calogen.serve.batching import BatchingConfig, batched_sampler
from calogen.serve.protocol import InputTensor
from calogen.serve.service import InferenceService

pytestmark = pytest.mark.usefixtures("one_thread")

DIRECTIONS = [(0.0, 0.0), (0.5, 0.0), (0.5, math.pi), (0.3, -1.0)]
"""One direction (theta, phi) rad per request."""


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> FlowModel:
    return load(_train(tmp_path_factory.mktemp("serve-directions"), "directed", conditioned=True))


class HeldFirst:
    """A ``sample_many`` that holds its first batch until released, so that the requests sent meanwhile merge."""

    def __init__(self, sample_many) -> None:  # type: ignore[no-untyped-def]
        self.sample_many, self.sizes = sample_many, []
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, requests, directions=None):  # type: ignore[no-untyped-def]
        self.entered.set()
        assert self.release.wait(30)
        self.sizes.append(len(requests))
        return self.sample_many(requests, directions=directions)


def _submit(service: InferenceService, energies: np.ndarray, direction: tuple[float, float], seed: int):  # type: ignore[no-untyped-def]
    inputs = [
        InputTensor("INCIDENT_ENERGY", "FP32", (energies.size, 1), energies.reshape(-1, 1)),
        InputTensor("INCIDENT_DIRECTION", "FP32", (2,), np.float32(direction)),
    ]
    return service.submit(service.spec.name, "", inputs, {"seed": seed})[0]


@pytest.mark.parametrize("exact", [False, True])
def test_a_merged_batch_gives_each_request_its_own_direction(model: FlowModel, exact: bool) -> None:
    """Each request of a batch mixing four directions gets ``model.sample`` at its direction: bit-identical
    with ``exact`` (one pass per request), to float rounding when merged into one network pass."""
    held = HeldFirst(batched_sampler(model, merge=not exact))
    e = np.geomspace(2e3, 5e4, 3).astype(np.float32)
    with InferenceService(model, name="directed", batching=BatchingConfig(max_batch_size=16, max_queue_delay_ms=0), sample_many=held) as service:
        first = _submit(service, e[:1], (0.1, 0.0), seed=1)
        assert held.entered.wait(30)
        futures = [_submit(service, e, d, seed=10 + k) for k, d in enumerate(DIRECTIONS)]
        held.release.set()
        results = [f.result(60) for f in futures]
        assert first.result(60).shape == (1, model.geometry.n_voxels)
    assert held.sizes == [1, len(DIRECTIONS)]  # the four requests ran as one batch
    for k, (d, got) in enumerate(zip(DIRECTIONS, results)):
        want = model.sample(e, seed=10 + k, directions=np.float32(d))
        if exact:
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(want.max()))
    elsewhere = model.sample(e, seed=11, directions=np.float32(DIRECTIONS[2]))
    assert np.abs(results[1] - elsewhere).max() > 1e-2 * float(results[1].max())  # same seed, other direction: other showers
