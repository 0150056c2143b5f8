"""One served Generator: its KServe description, its dynamic batcher and default seeds.

The HTTP and gRPC front ends both call :meth:`InferenceService.submit` with decoded tensors; the
service validates them (:mod:`calogen.serve.protocol`), picks the seed and queues the request. A model
conditioned on the incident direction gets every request's directions (the request's ``INCIDENT_DIRECTION``,
else the model's default direction, as ``calogen generate`` without ``--theta``), queued with the request's
energies and seed (:meth:`~calogen.serve.batching.DynamicBatcher.submit`).

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

import numpy as np

from calogen.errors import CalogenError
from calogen.generator import Generator, derive_seed
from calogen.serve.batching import BatchingConfig, DynamicBatcher, SampleMany, batched_sampler
from calogen.serve.limits import RequestLimits, generator_energy_range
from calogen.serve.protocol import InferenceError, InputTensor, ModelNotFound, ModelSpec, parse_inputs

__all__ = ["InferenceService"]


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
            conditioned on the incident direction it must take the requests' ``directions`` (see
            :data:`~calogen.serve.batching.SampleMany`).
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
        self.batcher = DynamicBatcher(sample_many or batched_sampler(generator), batching)
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
        many = batched_sampler(model, nfe=nfe, merge=not exact)
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
        future = self.batcher.submit(energies, seed, directions=directions, timeout_s=timeout_s, received=received, input_s=time.monotonic() - start)
        with self._activity:
            self._in_flight += 1
        future.add_done_callback(self._finished)
        return future, seed

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
