"""Counters of a dynamic batcher: requests, batch sizes, queue depth, latency percentiles and Triton's statistics.

:class:`BatcherStats` is updated by the batcher thread and the request handlers; it renders a JSON
snapshot (:meth:`BatcherStats.snapshot`), the Prometheus text format (:meth:`BatcherStats.prometheus`,
https://prometheus.io/docs/instrumenting/exposition_formats/) and Triton's ``ModelStatistics``
(:meth:`BatcherStats.model_statistics`, the ``statistics`` protocol extension).

Triton's durations, per request: ``success`` / ``fail`` from receipt to answer, ``queue`` waiting for a
batch, ``compute_input`` validating its tensors (energies, seed), ``compute_infer`` running the request's merged
batch, ``compute_output`` handing the request its rows. ``inference_count`` counts showers,
``execution_count`` executed batches. Reference:
https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_statistics.md
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BatcherStats", "RequestTiming"]

_QUANTILES = (0.5, 0.9, 0.99)
_TRITON_REQUEST = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
_TRITON_BATCH = ("compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class RequestTiming:
    """Durations of one request that ran, in seconds (see the module docstring)."""

    total: float
    queue: float
    compute_input: float
    compute_infer: float
    compute_output: float


class _Duration:
    """A count and a cumulative duration in nanoseconds."""

    __slots__ = ("count", "ns")

    def __init__(self) -> None:
        self.count, self.ns = 0, 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += max(round(seconds * 1e9), 0)


class BatcherStats:
    """Thread-safe serving statistics.

    Args:
        max_batch_size: upper edge of the batch-size histogram.
        window: number of recent requests kept for latency percentiles.
    """

    def __init__(self, max_batch_size: int, *, window: int = 10_000) -> None:
        self._lock = threading.Lock()
        self.requests: collections.Counter[str] = collections.Counter()
        self.showers = 0
        self.batches = 0
        self.batch_histogram: collections.Counter[int] = collections.Counter()
        self.queue_depth = 0
        self.compute_s = 0.0
        self.last_inference_ms = 0
        self._triton = {key: _Duration() for key in _TRITON_REQUEST}
        self._triton_batches: dict[int, dict[str, _Duration]] = {}
        self._latency_s: collections.deque[float] = collections.deque(maxlen=window)
        self._edges = [b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if b < max_batch_size] + [max_batch_size]

    def record_batch(self, n_showers: int, infer_s: float, output_s: float, requests: Sequence[RequestTiming]) -> None:
        """Count one executed batch of ``n_showers`` (run in ``infer_s``, split in ``output_s``) and its successful requests."""
        with self._lock:
            self.batches += 1
            self.showers += n_showers
            self.batch_histogram[n_showers] += 1
            self.compute_s += infer_s
            self.last_inference_ms = round(time.time() * 1e3)
            batch = self._triton_batches.setdefault(n_showers, {key: _Duration() for key in _TRITON_BATCH})
            batch["compute_input"].add(sum(r.compute_input for r in requests))
            batch["compute_infer"].add(infer_s)
            batch["compute_output"].add(output_s)
            for r in requests:
                self.requests["ok"] += 1
                self._latency_s.append(r.total)
                for key, seconds in (("success", r.total), ("queue", r.queue), ("compute_input", r.compute_input),
                                     ("compute_infer", r.compute_infer), ("compute_output", r.compute_output)):  # fmt: skip
                    self._triton[key].add(seconds)

    def record_request(self, outcome: str, duration_s: float | None = 0.0) -> None:
        """Count a refused or failed request (``invalid``, ``busy``, ``timeout``, ``error``, ...) and how long it took.

        ``duration_s=None`` counts it only by outcome, not as a failed request of this model (Triton's ``fail``).
        """
        with self._lock:
            self.requests[outcome] += 1
            if duration_s is not None:
                self._triton["fail"].add(duration_s)

    def set_queue_depth(self, depth: int) -> None:
        """Record the number of waiting requests."""
        with self._lock:
            self.queue_depth = depth

    def snapshot(self) -> dict[str, object]:
        """A JSON-able summary: counts, mean executed batch size, histogram, latency percentiles in ms."""
        with self._lock:
            latency = np.asarray(self._latency_s, dtype=float)
            return {
                "requests": dict(self.requests),
                "showers": self.showers,
                "batches": self.batches,
                "mean_batch_size": self.showers / self.batches if self.batches else 0.0,
                "batch_size_histogram": {str(k): v for k, v in sorted(self.batch_histogram.items())},
                "queue_depth": self.queue_depth,
                "compute_s": self.compute_s,
                "latency_ms": {f"p{round(q * 100)}": float(np.quantile(latency, q)) * 1e3 for q in _QUANTILES} if latency.size else {},
            }

    def model_statistics(self, name: str, version: str):  # type: ignore[no-untyped-def]
        """Triton's ``ModelStatistics`` protobuf of this model (``tritonclient.grpc.service_pb2``)."""
        from tritonclient.grpc import service_pb2 as pb

        with self._lock:
            stats = pb.ModelStatistics(
                name=name, version=version, last_inference=self.last_inference_ms,
                inference_count=self.showers, execution_count=self.batches,
            )  # fmt: skip
            for key in (*_TRITON_REQUEST, "cache_hit", "cache_miss"):
                duration = getattr(stats.inference_stats, key)
                duration.SetInParent()
                if key in self._triton:
                    duration.count, duration.ns = self._triton[key].count, self._triton[key].ns
            for size, batch in sorted(self._triton_batches.items()):
                entry = stats.batch_stats.add(batch_size=size)
                for key, value in batch.items():
                    getattr(entry, key).count, getattr(entry, key).ns = value.count, value.ns
        return stats

    def prometheus(self, model: str) -> str:
        """The statistics in the Prometheus text exposition format, labelled with ``model``."""
        label = f'model="{model}"'
        with self._lock:
            lines = ["# TYPE calogen_requests_total counter"]
            lines += [f'calogen_requests_total{{{label},outcome="{k}"}} {v}' for k, v in sorted(self.requests.items())]
            lines += [
                "# TYPE calogen_showers_total counter",
                f"calogen_showers_total{{{label}}} {self.showers}",
                "# TYPE calogen_queue_depth gauge",
                f"calogen_queue_depth{{{label}}} {self.queue_depth}",
                "# TYPE calogen_compute_seconds_total counter",
                f"calogen_compute_seconds_total{{{label}}} {self.compute_s:.6f}",
                "# TYPE calogen_batch_size histogram",
            ]
            for edge in self._edges:
                cumulative = sum(v for k, v in self.batch_histogram.items() if k <= edge)
                lines.append(f'calogen_batch_size_bucket{{{label},le="{edge}"}} {cumulative}')
            lines += [
                f'calogen_batch_size_bucket{{{label},le="+Inf"}} {self.batches}',
                f"calogen_batch_size_sum{{{label}}} {self.showers}",
                f"calogen_batch_size_count{{{label}}} {self.batches}",
                "# TYPE calogen_request_latency_seconds summary",
            ]
            latency = np.asarray(self._latency_s, dtype=float)
            if latency.size:
                lines += [
                    f'calogen_request_latency_seconds{{{label},quantile="{q}"}} {np.quantile(latency, q):.6f}' for q in _QUANTILES
                ]
            lines += [
                f"calogen_request_latency_seconds_sum{{{label}}} {latency.sum():.6f}",
                f"calogen_request_latency_seconds_count{{{label}}} {latency.size}",
            ]
        return "\n".join(lines) + "\n"
