"""One served Generator: its KServe description, its dynamic batcher and default seeds.

The HTTP and gRPC front ends both call :meth:`InferenceService.submit` with decoded tensors; the
service validates them (:mod:`calogen.serve.protocol`), picks the seed and queues the request. A model
conditioned on the incident direction gets every request's directions (the request's ``INCIDENT_DIRECTION``,
else the model's default direction, as ``calogen generate`` without ``--theta``): the dynamic batcher carries
only ``(energies, seed)``, so such a request is queued under a ticket in place of its seed, by which
:class:`DirectedSampler` finds the seed and directions when the batch runs.

Example:
    >>> import numpy as np
    >>> from calogen.geometry import Geometry
    >>> class Flat:
    ...     geometry = Geometry.builtin("tiny")
    ...     def sample(self, energies, *, seed, batch_size=None):
    ...         return np.repeat(np.asarray(energies, np.float32).reshape(-1, 1) / 120, 120, axis=1)
    >>> from calogen.serve.protocol import InputTensor
    >>> with InferenceService(Flat(), name="flat") as service:
    ...     future, seed = service.submit("flat", "", [InputTensor("INCIDENT_ENERGY", "FP32", (2, 1), np.ones((2, 1), np.float32))], {"seed": 3})
    ...     future.result().shape, seed
    ((2, 120), 3)
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calogen.errors import CalogenError
from calogen.generator import Generator, derive_seed
from calogen.serve.batching import BatchingConfig, DynamicBatcher, SampleMany, batched_sampler
from calogen.serve.limits import RequestLimits, generator_energy_range
from calogen.serve.protocol import InferenceError, InputTensor, ModelNotFound, ModelSpec, parse_inputs

__all__ = ["DirectedSampler", "InferenceService"]


class DirectedSampler:
    """Creates the :data:`~calogen.serve.batching.SampleMany` of a direction-conditioned model, whose requests
    also carry directions.

    :meth:`hold` files a request's seed and directions ``(n, 2)`` rad under a new ticket; the batcher runs
    ``(energies, ticket)`` pairs, and the call looks every ticket up: with ``merge``, each request's noise is
    drawn from its own seed and all run in one network pass (as :func:`~calogen.serve.batching.batched_sampler`),
    else one ``sample`` per request. :meth:`release` forgets a ticket once its request is done.

    Args:
        generator: a trained model (``draw_noise``, ``sample_with_noise`` and ``sample`` taking ``directions``).
        nfe: network evaluations per sample (None: the model's).
        merge: one network pass for merged requests.
    """

    def __init__(self, generator: Generator, *, nfe: int | None = None, merge: bool = True) -> None:
        self.generator, self.nfe, self.merge = generator, nfe, merge
        self._held: dict[int, tuple[int, np.ndarray]] = {}
        self._tickets = itertools.count()
        self._lock = threading.Lock()

    def hold(self, seed: int, directions: np.ndarray) -> int:
        """A new ticket for a request with ``seed`` and ``directions (n, 2)`` rad."""
        with self._lock:
            ticket = next(self._tickets)
            self._held[ticket] = (seed, directions)
        return ticket

    def release(self, ticket: int) -> None:
        """Forget ``ticket`` (its request finished, failed or was refused)."""
        with self._lock:
            self._held.pop(ticket, None)

    def __call__(self, requests: Sequence[tuple[np.ndarray, int]]) -> list[np.ndarray]:
        with self._lock:
            held = [self._held[ticket] for _, ticket in requests]
        g: Any = self.generator
        if not self.merge:
            return [g.sample(e, seed=seed, nfe=self.nfe, directions=d) for (e, _), (seed, d) in zip(requests, held)]
        noise = [g.draw_noise(e.size, seed=seed) for (e, _), (seed, _) in zip(requests, held)]
        showers = g.sample_with_noise(
            np.concatenate([e for e, _ in requests]), np.concatenate([n[0] for n in noise]), np.concatenate([n[1] for n in noise]),
            self.nfe, directions=np.concatenate([d for _, d in held]),
        )  # fmt: skip
        return np.split(showers, np.cumsum([e.size for e, _ in requests])[:-1])


def _takes_directions(generator: Generator) -> bool:
    """True for a trained model conditioned on the incident direction (``config.directions``, a ``default_direction``)."""
    return getattr(generator, "default_direction", None) is not None and bool(getattr(getattr(generator, "config", None), "directions", False))


class InferenceService:
    """A Generator behind a dynamic batcher, described as a KServe v2 model.

    Args:
        generator: the Generator to serve.
        name: the model name clients use.
        batching: dynamic-batching settings.
        parameters: facts shown in the model config (engine, geometry, NFE, ...).
        seed: server seed; a request without a seed gets ``derive_seed(seed, request_number)``
            and the response reports it.
        sample_many: overrides :func:`~calogen.serve.batching.batched_sampler` of ``generator``; for a model
            conditioned on the incident direction a :class:`DirectedSampler` (default: one with the model's NFE, merging).
        limits: energy range and request sizes (the energy range defaults to the generator's,
            :func:`~calogen.serve.limits.generator_energy_range`).
    """

    def __init__(
        self,
        generator: Generator,
        *,
        name: str = "calogen",
        batching: BatchingConfig | None = None,
        parameters: Mapping[str, str] | None = None,
        seed: int = 0,
        sample_many: SampleMany | None = None,
        limits: RequestLimits | None = None,
    ) -> None:
        self.generator = generator
        batching = batching or BatchingConfig()
        self.limits = limits or RequestLimits()
        params = {"geometry": generator.geometry.name, **(parameters or {})}
        direction = getattr(generator, "direction", None) or getattr(generator, "default_direction", None)
        conditioned = _takes_directions(generator)
        if conditioned and sample_many is not None and not isinstance(sample_many, DirectedSampler):
            raise CalogenError("a model conditioned on the incident direction is served with a DirectedSampler, not another sample_many")
        self._directed: DirectedSampler | None = None
        if conditioned:
            self._directed = sample_many if isinstance(sample_many, DirectedSampler) else DirectedSampler(generator)
        self.spec = ModelSpec(
            name=name,
            n_voxels=generator.geometry.n_voxels,
            max_batch_size=batching.max_batch_size,
            energy_range=self.limits.energy_range or generator_energy_range(generator),
            parameters=params,
            max_queue_delay_us=round(batching.max_queue_delay_ms * 1e3),
            preferred_batch_size=batching.max_batch_size,
            direction=None if direction is None else (float(direction[0]), float(direction[1])),
            direction_conditioned=conditioned,
        )
        self.batcher = DynamicBatcher(self._directed or sample_many or batched_sampler(generator), batching)
        self._seed = int(seed)
        self._counter = itertools.count()
        self._counter_lock = threading.Lock()
        self._draining = False
        self._activity = threading.Lock()
        self._in_flight = 0  # submitted requests whose showers are not ready yet
        self._last_arrival = time.monotonic()

    @classmethod
    def from_source(
        cls,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        engine: str | None = None,
        geometry: str | None = None,
        particle: str = "e-",
        nfe: int | None = None,
        exact: bool = False,
        name: str | None = None,
        batching: BatchingConfig | None = None,
        seed: int = 0,
        limits: RequestLimits | None = None,
    ) -> InferenceService:
        """Serve a trained model directory, or a simulation ``engine`` (``gflash``, ``full``) for ``geometry``.

        ``nfe`` sets a model's network evaluations per sample and is shown as the config parameter
        ``nfe``; ``exact`` runs a model once per request instead of merging requests into one network
        pass (see :func:`~calogen.serve.batching.batched_sampler`). A hybrid refiner's directory serves
        FastSim + refiner (:class:`~calogen.hybrid.HybridGenerator`): the FastSim runs in this process, the
        client sends incident energies only, and every request runs on its own (always exact).
        """
        if (model_dir is None) == (engine is None):
            raise CalogenError("give either a model directory or --engine (with --geometry), not both or neither")
        if engine is not None:
            if geometry is None:
                raise CalogenError(f"--engine {engine} needs --geometry (a built-in name such as ds2, or a binning XML)")
            from calogen.sim.engines import make_engine

            generator = make_engine(engine, geometry, particle)
            params = {"engine": engine, "particle": particle}
            return cls(generator, name=name or engine, batching=batching, parameters=params, seed=seed, limits=limits)
        from calogen.models import load

        model = load(model_dir)
        params = {"engine": "model", "nfe": str(nfe or model.config.nfe), "sampler": model.config.sampler, "exact": str(exact).lower()}
        if getattr(model, "refiner", None) is not None:
            model.engine()  # built now: a refiner without a recorded FastSim engine fails before serving
            params.update(engine="hybrid", fastsim=str(model.fastsim.get("engine")), exact="true")  # no explicit noise: one pass per request
        model_name = name or Path(str(model_dir)).resolve().name
        many = DirectedSampler(model, nfe=nfe, merge=not exact) if _takes_directions(model) else batched_sampler(model, nfe=nfe, merge=not exact)
        return cls(model, name=model_name, batching=batching, parameters=params, seed=seed, sample_many=many, limits=limits)

    def __enter__(self) -> InferenceService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def ready(self) -> bool:
        """True while the service takes new requests (false once shutdown begins)."""
        return self.batcher.accepting and not self._draining

    def submit(
        self,
        model: str,
        version: str,
        inputs: Sequence[InputTensor],
        parameters: Mapping[str, object],
        outputs: Sequence[str] = (),
        *,
        timeout_s: float | None = None,
        received: float | None = None,
    ) -> tuple[concurrent.futures.Future[np.ndarray], int]:
        """Validate and queue one inference request; returns the future of its showers and its seed.

        ``received`` is ``time.monotonic()`` when the transport got the request (for the statistics).
        """
        start = time.monotonic()
        received = start if received is None else received
        with self._activity:
            self._last_arrival = start
        try:
            self.spec.check(model, version)
        except ModelNotFound:
            self.batcher.stats.record_request("not_found", None)
            raise
        try:
            energies, seed, directions = parse_inputs(self.spec, inputs, parameters, outputs)
        except InferenceError:
            self.record_refused(received)
            raise
        if seed is None:
            with self._counter_lock:
                seed = derive_seed(self._seed, next(self._counter))
        future = self._enqueue(energies, seed, directions, timeout_s=timeout_s, received=received, input_s=time.monotonic() - start)
        with self._activity:
            self._in_flight += 1
        future.add_done_callback(self._finished)
        return future, seed

    def _enqueue(self, energies: np.ndarray, seed: int, directions: np.ndarray | None, **timing: Any) -> concurrent.futures.Future[np.ndarray]:
        """Submit to the batcher; a direction-conditioned model's request under a ticket holding its seed and directions."""
        directed = self._directed
        if directed is None or directions is None:
            return self.batcher.submit(energies, seed, **timing)
        ticket = directed.hold(seed, directions)
        try:
            future = self.batcher.submit(energies, ticket, **timing)
        except BaseException:
            directed.release(ticket)
            raise
        future.add_done_callback(lambda _: directed.release(ticket))
        return future

    def _finished(self, future: concurrent.futures.Future[np.ndarray]) -> None:
        with self._activity:
            self._in_flight -= 1

    def idle_s(self) -> float:
        """Seconds since the last request arrived; 0 while a submitted request is unfinished."""
        with self._activity:
            return 0.0 if self._in_flight else time.monotonic() - self._last_arrival

    def record_refused(self, received: float) -> None:
        """Count an invalid request for this model: refused by its validation or by the transport (body too large, malformed)."""
        self.batcher.stats.record_request("invalid", time.monotonic() - received)

    def begin_shutdown(self) -> None:
        """Report not ready, so that load balancers stop sending; requests still arriving are served."""
        self._draining = True

    def close(self, *, drain: bool = True) -> None:
        """Stop taking requests and (with ``drain``) finish the queued ones."""
        self._draining = True
        self.batcher.close(drain=drain)
