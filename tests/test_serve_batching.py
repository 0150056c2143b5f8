"""Dynamic batcher: merged batches equal separate seeded calls, bounds, timeouts, draining, failures."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from calogen.errors import CalogenError
from calogen.generator import derive_seed
from calogen.geometry import Geometry
from calogen.serve.batching import BatchingConfig, DynamicBatcher, batched_sampler
from calogen.serve.protocol import InferenceError, RequestTimeout, ServerBusy, ServerUnavailable


class PerShowerGenerator:
    """A deterministic fake Generator: shower ``i`` depends only on its energy and ``derive_seed(seed, i)``.

    ``sample_many`` runs all requests of a merged batch in one pass; ``calls`` records the number
    of showers of every pass.
    """

    def __init__(self) -> None:
        self.geometry = Geometry.builtin("tiny")
        self.calls: list[int] = []

    def _showers(self, energies: np.ndarray, seeds: list[int]) -> np.ndarray:
        v = self.geometry.n_voxels
        rows = [np.random.default_rng(s).random(v) * e / (0.5 * v) for e, s in zip(energies, seeds)]
        return np.asarray(rows, dtype=np.float32).reshape(-1, v)

    def sample(self, energies: np.ndarray, *, seed: int, batch_size: int | None = None) -> np.ndarray:
        energies = np.asarray(energies, dtype=np.float32).reshape(-1)
        return self._showers(energies, [derive_seed(seed, i) for i in range(energies.size)])

    def sample_many(self, requests: list[tuple[np.ndarray, int]]) -> list[np.ndarray]:
        energies = np.concatenate([e for e, _ in requests])
        seeds = [derive_seed(s, i) for e, s in requests for i in range(e.size)]
        self.calls.append(energies.size)
        merged = self._showers(energies, seeds)
        return np.split(merged, np.cumsum([e.size for e, _ in requests])[:-1])


class Gate:
    """Wraps a ``sample_many`` so that the test decides when each batch may run."""

    def __init__(self, sample_many) -> None:  # type: ignore[no-untyped-def]
        self.sample_many = sample_many
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, requests):  # type: ignore[no-untyped-def]
        self.entered.set()
        assert self.release.wait(10)
        return self.sample_many(requests)


def energies(n: int, offset: float = 0.0) -> np.ndarray:
    return (1000.0 + 100.0 * np.arange(n) + offset).astype(np.float32)


def test_merged_batches_equal_separate_calls() -> None:
    gen = PerShowerGenerator()
    gate = Gate(gen.sample_many)
    with DynamicBatcher(gate, BatchingConfig(max_batch_size=8, max_queue_delay_ms=0)) as batcher:
        first = batcher.submit(energies(1), seed=5)
        assert gate.entered.wait(10)
        requests = [(energies(n, n), 100 + n) for n in (3, 2, 3, 4)]
        futures = [batcher.submit(e, seed=s) for e, s in requests]
        gate.release.set()
        results = [f.result(10) for f in futures]
        np.testing.assert_array_equal(first.result(10), gen.sample(energies(1), seed=5))
    for (e, s), got in zip(requests, results):
        np.testing.assert_array_equal(got, gen.sample(e, seed=s))
    # requests are merged in order while they fit: [1], [3+2+3], [4]
    assert gen.calls == [1, 8, 4]
    snap = batcher.stats.snapshot()
    assert snap["requests"] == {"ok": 5} and snap["batches"] == 3 and snap["mean_batch_size"] == pytest.approx(13 / 3)


def test_queue_bound_gives_server_busy() -> None:
    gate = Gate(PerShowerGenerator().sample_many)
    batcher = DynamicBatcher(gate, BatchingConfig(max_batch_size=4, max_queue_size=2, max_queue_delay_ms=0))
    running = batcher.submit(energies(1), seed=1)
    assert gate.entered.wait(10)
    queued = [batcher.submit(energies(1), seed=s) for s in (2, 3)]
    with pytest.raises(ServerBusy, match="queue full"):
        batcher.submit(energies(1), seed=4)
    gate.release.set()
    batcher.close()
    assert [f.result(10).shape for f in [running, *queued]] == [(1, 120)] * 3
    assert batcher.stats.snapshot()["requests"] == {"ok": 3, "busy": 1}


def test_request_timeout_while_queued() -> None:
    gate = Gate(PerShowerGenerator().sample_many)
    batcher = DynamicBatcher(gate, BatchingConfig(max_batch_size=4, max_queue_delay_ms=0, timeout_s=0.05))
    running = batcher.submit(energies(1), seed=1)
    assert gate.entered.wait(10)
    late = batcher.submit(energies(1), seed=2)
    time.sleep(0.1)
    gate.release.set()
    assert running.result(10).shape == (1, 120)
    with pytest.raises(RequestTimeout):
        late.result(10)
    batcher.close()


def test_close_drains_queued_work_and_refuses_new() -> None:
    gen = PerShowerGenerator()
    gate = Gate(gen.sample_many)
    batcher = DynamicBatcher(gate, BatchingConfig(max_batch_size=2, max_queue_delay_ms=0))
    futures = [batcher.submit(energies(2), seed=s) for s in range(4)]
    assert gate.entered.wait(10)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    while batcher.accepting:
        time.sleep(0.001)
    with pytest.raises(ServerUnavailable):
        batcher.submit(energies(1), seed=9)
    gate.release.set()
    closer.join(10)
    for s, f in enumerate(futures):
        np.testing.assert_array_equal(f.result(0), gen.sample(energies(2), seed=s))


def test_close_without_drain_fails_queued_requests() -> None:
    gate = Gate(PerShowerGenerator().sample_many)
    batcher = DynamicBatcher(gate, BatchingConfig(max_batch_size=1, max_queue_delay_ms=0))
    running = batcher.submit(energies(1), seed=0)
    assert gate.entered.wait(10)
    queued = batcher.submit(energies(1), seed=1)
    gate.release.set()
    batcher.close(drain=False)
    assert running.result(10).shape == (1, 120)
    with pytest.raises(ServerUnavailable):
        queued.result(10)


def test_generator_failure_reaches_every_request_and_batcher_recovers() -> None:
    def broken_then_fine(requests):  # type: ignore[no-untyped-def]
        if any(seed == 666 for _, seed in requests):
            raise RuntimeError("boom")
        return [np.zeros((e.size, 3), np.float32) for e, _ in requests]

    with DynamicBatcher(broken_then_fine, BatchingConfig(max_batch_size=4)) as batcher:
        with pytest.raises(RuntimeError, match="boom"):
            batcher.submit(energies(2), seed=666).result(10)
        assert batcher.submit(energies(2), seed=1).result(10).shape == (2, 3)


def test_a_failing_request_merged_with_others_fails_alone() -> None:
    gen = PerShowerGenerator()

    def refuses_666(requests):  # type: ignore[no-untyped-def]
        if any(seed == 666 for _, seed in requests):
            raise RuntimeError("boom")
        return gen.sample_many(requests)

    gate = Gate(refuses_666)
    with DynamicBatcher(gate, BatchingConfig(max_batch_size=8, max_queue_delay_ms=0)) as batcher:
        first = batcher.submit(energies(1), seed=1)
        assert gate.entered.wait(10)
        merged = [batcher.submit(energies(2), seed=s) for s in (2, 666, 3)]  # queued: one merged batch
        gate.release.set()
        assert first.result(10).shape == (1, 120)
        with pytest.raises(RuntimeError, match="boom"):
            merged[1].result(10)
        for future, seed in ((merged[0], 2), (merged[2], 3)):
            np.testing.assert_array_equal(future.result(10), gen.sample(energies(2), seed=seed))
    assert batcher.stats.snapshot()["requests"] == {"ok": 3, "error": 1}


def test_request_larger_than_max_batch_is_refused() -> None:
    with DynamicBatcher(PerShowerGenerator().sample_many, BatchingConfig(max_batch_size=4)) as batcher:
        with pytest.raises(InferenceError, match="1 to 4 energies"):
            batcher.submit(energies(5), seed=0)


def test_batched_sampler_falls_back_to_one_call_per_request() -> None:
    gen = PerShowerGenerator()

    class SampleOnly:
        geometry = gen.geometry
        sample = staticmethod(gen.sample)

    requests = [(energies(3), 7), (energies(1), 8)]
    got = batched_sampler(SampleOnly())(requests)
    for (e, s), showers in zip(requests, got):
        np.testing.assert_array_equal(showers, gen.sample(e, seed=s))
    assert batched_sampler(gen) == gen.sample_many


@pytest.mark.parametrize("bad", [{"max_batch_size": 0}, {"max_queue_size": 0}, {"max_queue_delay_ms": -1.0}, {"timeout_s": float("nan")}])
def test_config_rejects_bad_settings(bad: dict[str, float]) -> None:
    with pytest.raises(CalogenError, match=next(iter(bad))):
        BatchingConfig(**bad)  # type: ignore[arg-type]


def test_prometheus_text_reports_batches_and_latency() -> None:
    with DynamicBatcher(PerShowerGenerator().sample_many, BatchingConfig(max_batch_size=4)) as batcher:
        batcher.submit(energies(3), seed=0).result(10)
    text = batcher.stats.prometheus("m")
    assert 'calogen_requests_total{model="m",outcome="ok"} 1' in text
    assert 'calogen_batch_size_bucket{model="m",le="2"} 0' in text
    assert 'calogen_batch_size_bucket{model="m",le="4"} 1' in text
    assert 'calogen_request_latency_seconds{model="m",quantile="0.99"}' in text


class DirectedNoiseGenerator:
    """A fake direction-conditioned model with explicit noise: shower ``i`` depends on its energy, its noise
    (from ``derive_seed(seed, i)``) and its direction ``(theta, phi)``, whatever else shares its batch."""

    def __init__(self) -> None:
        self.geometry = Geometry.builtin("tiny")

    def draw_noise(self, n: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rows = [np.random.default_rng(derive_seed(seed, i)).standard_normal(1 + self.geometry.n_voxels) for i in range(n)]
        noise = np.asarray(rows, dtype=np.float32).reshape(n, -1)
        return noise[:, :1], noise[:, 1:]

    def sample_with_noise(
        self, energies: np.ndarray, noise_energy: np.ndarray, noise_shape: np.ndarray, nfe: int | None = None, *, directions: np.ndarray | None = None
    ) -> np.ndarray:
        e = np.asarray(energies, dtype=np.float64).reshape(-1, 1)
        d = np.zeros((e.shape[0], 2)) if directions is None else np.broadcast_to(np.asarray(directions, dtype=np.float64), (e.shape[0], 2))
        tilt = 1 + np.cos(d[:, :1]) * np.cos(d[:, 1:] + np.arange(self.geometry.n_voxels))
        return (e * np.exp(0.1 * noise_energy) * np.abs(noise_shape) * tilt / self.geometry.n_voxels).astype(np.float32)

    def sample(self, energies: np.ndarray, *, seed: int, nfe: int | None = None, directions: np.ndarray | None = None) -> np.ndarray:
        e = np.asarray(energies, dtype=np.float32).reshape(-1)
        return self.sample_with_noise(e, *self.draw_noise(e.size, seed=seed), nfe, directions=directions)


class DirectedGate(Gate):
    """A :class:`Gate` that passes the requests' directions on."""

    def __call__(self, requests, directions=None):  # type: ignore[no-untyped-def]
        self.entered.set()
        assert self.release.wait(10)
        return self.sample_many(requests) if directions is None else self.sample_many(requests, directions=directions)


@pytest.mark.parametrize("merge", [True, False])
def test_merged_requests_keep_their_own_directions(merge: bool) -> None:
    gen = DirectedNoiseGenerator()
    gate = DirectedGate(batched_sampler(gen, merge=merge))
    requests = [(energies(2, k), 10 + k, np.array([[0.1 * k, 0.0], [0.2 * k, -1.0 * k]])) for k in range(3)]
    with DynamicBatcher(gate, BatchingConfig(max_batch_size=8, max_queue_delay_ms=0)) as batcher:
        first = batcher.submit(energies(1), seed=1, directions=np.zeros((1, 2)))
        assert gate.entered.wait(10)
        futures = [batcher.submit(e, seed=s, directions=d) for e, s, d in requests]  # queued: one merged batch
        gate.release.set()
        results = [f.result(10) for f in futures]
        assert first.result(10).shape == (1, 120)
    assert batcher.stats.snapshot()["batches"] == 2
    for (e, s, d), got in zip(requests, results):
        np.testing.assert_array_equal(got, gen.sample(e, seed=s, directions=d))
        assert not np.array_equal(got, gen.sample(e, seed=s, directions=np.array([0.7, 2.0])))  # the direction matters


def test_requests_with_and_without_directions_run_apart() -> None:
    calls: list[bool] = []

    def many(requests, directions=None):  # type: ignore[no-untyped-def]
        calls.append(directions is not None)
        return [np.zeros((e.size, 3), np.float32) for e, _ in requests]

    gate = DirectedGate(many)
    with DynamicBatcher(gate, BatchingConfig(max_batch_size=8, max_queue_delay_ms=0)) as batcher:
        first = batcher.submit(energies(1), seed=0)
        assert gate.entered.wait(10)
        futures = [batcher.submit(energies(1), seed=1), batcher.submit(energies(1), seed=2, directions=np.zeros((1, 2))), batcher.submit(energies(1), seed=3)]
        gate.release.set()
        assert [f.result(10).shape for f in [first, *futures]] == [(1, 3)] * 4
    assert calls == [False, False, True, False]


def test_directions_of_another_shape_are_refused() -> None:
    with DynamicBatcher(DirectedNoiseGenerator().sample, BatchingConfig(max_batch_size=4)) as batcher:
        with pytest.raises(InferenceError, match=r"one \(theta, phi\) per energy, \(3, 2\); got directions of shape \(2, 2\)"):
            batcher.submit(energies(3), seed=0, directions=np.zeros((2, 2)))
