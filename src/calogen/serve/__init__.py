"""Inference as a service (KServe v2 / Triton protocol) and export to ONNX and Triton.

- :mod:`~calogen.serve.protocol` — the served model's tensors, metadata, config and request validation.
- :mod:`~calogen.serve.batching` — the dynamic batcher (bounded queue, merged seeded batches, timeouts).
- :mod:`~calogen.serve.limits` — what one request may ask: energy range, body size before and after decoding.
- :mod:`~calogen.serve.metrics` — batcher statistics as JSON, Prometheus text and Triton's model statistics.
- :mod:`~calogen.serve.service` — one Generator behind a batcher: what both front ends call.
- :mod:`~calogen.serve.kserve_http`, :mod:`~calogen.serve.kserve_grpc` — the two transports.
- :mod:`~calogen.serve.server` — start and stop both on a host.
- :mod:`~calogen.serve.export`, :mod:`~calogen.serve.triton_repo` — ONNX graph and Triton repository.

Nothing is imported here, so ``import calogen.serve`` stays cheap; the transports need the ``serve`` extra.
"""
