"""Dynamic batching: merge concurrent requests into one Generator call, then split the result back.

Requests wait in a bounded FIFO queue. One worker thread takes the oldest request and keeps adding
queued requests, in order, while the merged batch stays within ``max_batch_size`` showers and the
oldest request has waited less than ``max_queue_delay_ms`` (Triton's dynamic batcher works alike).
The merged batch runs as one ``sample_many`` call; if that call fails, its requests run one by one, so
one failing request never fails the others.

Reproducibility: a request carries its own seed, and ``sample_many([(e1, s1), (e2, s2)])`` must equal
``[sample(e1, seed=s1), sample(e2, seed=s2)]``. A request to a direction-conditioned model also carries its
incident directions ``(n, 2)`` ``(theta, phi)`` rad; they travel beside the energies, reach ``sample_many`` as
``directions=[d1, d2]`` (one array per request, merged and split like the energies) and must give
``[sample(e1, seed=s1, directions=d1), ...]``. Requests with and without directions never share a batch. Generators that can merge requests in one pass offer
``sample_many`` themselves (for instance by seeding shower ``i`` of a request from
``derive_seed(seed, i)``). :func:`batched_sampler` builds one for trained models from their explicit
noise (each request's noise drawn from its own seed, then one network pass: equal to separate calls up
to floating-point rounding of batched matrix products); for other Generators it runs the requests one
after another, which is exact but saves nothing.

Example:
    >>> import numpy as np
    >>> def many(requests):
    ...     return [np.repeat(e[:, None], 3, axis=1) for e, _ in requests]
    >>> with DynamicBatcher(many, BatchingConfig(max_batch_size=8)) as batcher:
    ...     batcher.submit(np.ones(2, np.float32), seed=1).result().shape
    (2, 3)
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from calogen.errors import CalogenError
from calogen.generator import Generator
from calogen.serve.metrics import BatcherStats, RequestTiming
from calogen.serve.protocol import InferenceError, RequestTimeout, ServerBusy, ServerUnavailable

__all__ = ["BatchingConfig", "DynamicBatcher", "SampleMany", "batched_sampler"]

log = logging.getLogger(__name__)

SampleMany = Callable[..., list[np.ndarray]]
"""Showers for several ``(energies (n_k,) MeV, seed)`` requests: one ``(n_k, voxels)`` array per request.

Called as ``sample_many(requests)``, or, when the requests carry incident directions, as
``sample_many(requests, directions=[(n_k, 2) (theta, phi) rad, ...])``."""


@dataclass(frozen=True)
class BatchingConfig:
    """Settings of the dynamic batcher.

    Args:
        max_batch_size: the most showers in one executed batch (and in one request).
        max_queue_delay_ms: how long the oldest request may wait for others to join its batch.
        max_queue_size: the most requests waiting; further ones are refused with :class:`ServerBusy`.
        timeout_s: a request still queued after this long fails with :class:`RequestTimeout`.
    """

    max_batch_size: int = 64
    max_queue_delay_ms: float = 5.0
    max_queue_size: int = 1024
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        for key in ("max_batch_size", "max_queue_size"):
            if getattr(self, key) < 1:
                raise CalogenError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("max_queue_delay_ms", "timeout_s"):
            if not getattr(self, key) >= 0:
                raise CalogenError(f"{key} must be >= 0, got {getattr(self, key)}")


def batched_sampler(generator: Generator, *, nfe: int | None = None, merge: bool = True) -> SampleMany:
    """The fastest exact way to run merged requests on ``generator``.

    In order of preference: the generator's own ``sample_many``; for generators with explicit
    noise (``draw_noise(n, seed=)`` and ``sample_with_noise(energies, noise_energy, noise_shape, nfe)``,
    as trained models have), each request's noise is drawn from its own seed and the merged batch runs
    as one network pass; otherwise one ``sample`` call per request. Requests' directions, if given, are
    merged and passed on as the ``directions`` of ``sample_with_noise`` (or of each ``sample``).

    Args:
        generator: the Generator to serve.
        nfe: network evaluations per sample for models with a few-step sampler (None: the model's default).
        merge: allow the explicit-noise merged pass; ``False`` gives bit-identical ``sample`` results
            for models whose rounding depends on the batch composition, at the cost of one pass per request.
    """
    many = getattr(generator, "sample_many", None)
    if callable(many):
        return many  # type: ignore[no-any-return]
    options = {} if nfe is None else {"nfe": nfe}
    if merge and callable(getattr(generator, "draw_noise", None)) and callable(getattr(generator, "sample_with_noise", None)):

        def with_noise(requests: Sequence[tuple[np.ndarray, int]], directions: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
            noise = [generator.draw_noise(energies.size, seed=seed) for energies, seed in requests]  # type: ignore[attr-defined]
            energies = np.concatenate([e for e, _ in requests])
            noise_energy = np.concatenate([n[0] for n in noise])
            noise_shape = np.concatenate([n[1] for n in noise])
            merged = {} if directions is None else {"directions": np.concatenate(directions)}
            showers = generator.sample_with_noise(energies, noise_energy, noise_shape, **options, **merged)  # type: ignore[attr-defined]
            return np.split(showers, np.cumsum([e.size for e, _ in requests])[:-1])

        return with_noise

    def one_by_one(requests: Sequence[tuple[np.ndarray, int]], directions: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        if directions is None:
            return [generator.sample(energies, seed=seed, **options) for energies, seed in requests]
        return [generator.sample(e, seed=seed, directions=d, **options) for (e, seed), d in zip(requests, directions, strict=True)]  # type: ignore[call-arg]

    return one_by_one


@dataclass
class _Request:
    energies: np.ndarray
    seed: int
    directions: np.ndarray | None  # (n, 2) (theta, phi) rad, or None: the generator takes no direction
    future: concurrent.futures.Future[np.ndarray]
    received: float  # when the server got the request (time.monotonic)
    input_s: float  # time spent validating its tensors
    enqueued: float
    deadline: float


class DynamicBatcher:
    """Queues requests and runs them in merged batches on one worker thread.

    Args:
        sample_many: runs a list of seeded requests (see :data:`SampleMany`).
        config: batch size, queue delay, queue bound and timeout.
    """

    def __init__(self, sample_many: SampleMany, config: BatchingConfig | None = None) -> None:
        self.config = config or BatchingConfig()
        self.stats = BatcherStats(self.config.max_batch_size)
        self._sample_many = sample_many
        self._queue: collections.deque[_Request] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._worker = threading.Thread(target=self._run, name="calogen-batcher", daemon=True)
        self._worker.start()

    def __enter__(self) -> DynamicBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def accepting(self) -> bool:
        """True until :meth:`close` is called."""
        return not self._closing

    def submit(
        self, energies: np.ndarray, seed: int, *, directions: np.ndarray | None = None, timeout_s: float | None = None,
        received: float | None = None, input_s: float = 0.0,
    ) -> concurrent.futures.Future[np.ndarray]:  # fmt: skip
        """Queue showers for ``energies`` (``(n,)`` MeV, ``1 <= n <= max_batch_size``) with ``seed``, at
        ``directions`` (``(n, 2)`` ``(theta, phi)`` rad, checked by the caller; None: the generator takes none).

        Returns a future of the ``(n, voxels)`` float32 showers. Raises :class:`ServerBusy` when the
        queue is full and :class:`ServerUnavailable` after :meth:`close`. ``received`` (``time.monotonic()``
        when the request arrived, default now) and ``input_s`` (time spent validating it) go into the statistics.
        """
        energies = np.ascontiguousarray(energies, dtype=np.float32).reshape(-1)
        if not 1 <= energies.size <= self.config.max_batch_size:
            raise InferenceError(f"a request needs 1 to {self.config.max_batch_size} energies, got {energies.size}")
        if directions is not None:
            directions = np.asarray(directions, dtype=np.float64)
            if directions.shape != (energies.size, 2):
                raise InferenceError(f"a request needs one (theta, phi) per energy, ({energies.size}, 2); got directions of shape {directions.shape}")
        now = time.monotonic()
        received = now if received is None else received
        timeout = self.config.timeout_s if timeout_s is None else min(timeout_s, self.config.timeout_s)
        request = _Request(energies, int(seed), directions, concurrent.futures.Future(), received, input_s, now, now + timeout)
        with self._cond:
            if self._closing:
                self.stats.record_request("unavailable", now - received)
                raise ServerUnavailable("the server is shutting down; send the request to another instance")
            if len(self._queue) >= self.config.max_queue_size:
                self.stats.record_request("busy", now - received)
                raise ServerBusy(f"request queue full ({self.config.max_queue_size} waiting); retry later or raise --max-queue-size")
            self._queue.append(request)
            self.stats.set_queue_depth(len(self._queue))
            self._cond.notify()
        return request.future

    def close(self, *, drain: bool = True, timeout_s: float | None = None) -> None:
        """Stop taking requests; with ``drain`` run everything already queued, else fail it with :class:`ServerUnavailable`."""
        with self._cond:
            self._closing = True
            if not drain:
                while self._queue:
                    request = self._queue.popleft()
                    request.future.set_exception(ServerUnavailable("the server shut down before running the request"))
                    self.stats.record_request("unavailable", time.monotonic() - request.received)
            self._cond.notify_all()
        self._worker.join(timeout_s)

    # --- worker --------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._execute(batch)

    def _next_batch(self) -> list[_Request] | None:
        """Block until a batch is ready: full, or the oldest request waited ``max_queue_delay_ms``, or the next
        request differs from the oldest in carrying directions."""
        delay = self.config.max_queue_delay_ms * 1e-3
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            batch = [self._queue.popleft()]
            size = batch[0].energies.size
            release = batch[0].enqueued + delay
            while size < self.config.max_batch_size:
                if self._queue:
                    following = self._queue[0]
                    if size + following.energies.size > self.config.max_batch_size or (following.directions is None) != (batch[0].directions is None):
                        break
                    batch.append(self._queue.popleft())
                    size += batch[-1].energies.size
                    continue
                remaining = release - time.monotonic()
                if remaining <= 0 or self._closing:
                    break
                self._cond.wait(remaining)
            self.stats.set_queue_depth(len(self._queue))
        return batch

    def _execute(self, batch: list[_Request]) -> None:
        """Drop cancelled and timed-out requests of ``batch``, run the others."""
        now = time.monotonic()
        live = []
        for request in batch:
            if not request.future.set_running_or_notify_cancel():
                continue  # the client gave up
            if now > request.deadline:
                request.future.set_exception(RequestTimeout(f"request waited {now - request.enqueued:.3f} s in the queue, over its timeout"))
                self.stats.record_request("timeout", now - request.received)
                continue
            live.append(request)
        if live:
            self._run_requests(live)

    def _run_requests(self, live: list[_Request]) -> None:
        """Run requests as one ``sample_many`` call and hand each its showers.

        If the merged call fails, each request runs alone, so only the requests that fail by
        themselves report the error.
        """
        start = time.monotonic()
        try:
            requests = [(r.energies, r.seed) for r in live]
            if live[0].directions is None:
                showers = self._sample_many(requests)
            else:
                showers = self._sample_many(requests, directions=[r.directions for r in live])
            if len(showers) != len(live) or any(s.shape[0] != r.energies.size for s, r in zip(showers, live)):
                raise RuntimeError("sample_many returned showers that do not match the requests")
        except Exception as exc:  # the generator failed
            if len(live) > 1:
                log.warning("batch of %d requests failed (%s); running them one by one", len(live), exc)
                for request in live:
                    self._run_requests([request])
                return
            log.exception("request of %d showers failed", live[0].energies.size)
            live[0].future.set_exception(exc)
            self.stats.record_request("error", time.monotonic() - live[0].received)
            return
        end = time.monotonic()
        timings, outputs = [], []
        for request, result in zip(live, showers):
            begin = time.monotonic()
            outputs.append(np.ascontiguousarray(result, dtype=np.float32))
            done = time.monotonic()
            timings.append(RequestTiming(done - request.received, start - request.enqueued, request.input_s, end - start, done - begin))
        n_showers = sum(r.energies.size for r in live)
        self.stats.record_batch(n_showers, end - start, time.monotonic() - end, timings)
        for request, result in zip(live, outputs):
            request.future.set_result(result)
        log.debug("ran %d requests, %d showers in %.1f ms", len(live), n_showers, (end - start) * 1e3)
