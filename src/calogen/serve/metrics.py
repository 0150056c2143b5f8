"""Counters of a dynamic batcher: requests, batch sizes, queue depth and latency percentiles.

:class:`BatcherStats` is updated by the batcher thread and the request handlers; it renders a JSON
snapshot (:meth:`BatcherStats.snapshot`) and the Prometheus text format (:meth:`BatcherStats.prometheus`,
https://prometheus.io/docs/instrumenting/exposition_formats/).
"""

from __future__ import annotations

import collections
import threading

import numpy as np

__all__ = ["BatcherStats"]

_QUANTILES = (0.5, 0.9, 0.99)


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
        self._latency_s: collections.deque[float] = collections.deque(maxlen=window)
        self._edges = [b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if b < max_batch_size] + [max_batch_size]

    def record_batch(self, n_showers: int, compute_s: float) -> None:
        """Count one executed batch of ``n_showers`` that took ``compute_s`` seconds."""
        with self._lock:
            self.batches += 1
            self.showers += n_showers
            self.batch_histogram[n_showers] += 1
            self.compute_s += compute_s

    def record_request(self, outcome: str, latency_s: float | None = None) -> None:
        """Count a finished request (``ok`` or an error kind) and its end-to-end latency."""
        with self._lock:
            self.requests[outcome] += 1
            if latency_s is not None:
                self._latency_s.append(latency_s)

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
