"""Run the HTTP and gRPC front ends of one :class:`~calogen.serve.service.InferenceService`.

:func:`start` binds both (port 0 picks a free one), runs HTTP (uvicorn) in a thread and gRPC in its
own thread pool, and returns a :class:`RunningServer`; :meth:`RunningServer.stop` reports not ready,
answers requests until none is left or arriving, then stops accepting and closes both. The ``calogen serve``
command and the tests use it alike.

The HTTP listening socket is created with ``IPPROTO_TCP`` so that asyncio sets ``TCP_NODELAY`` on every
accepted connection (with protocol 0 it does not, and each small response waits for the client's
delayed ACK, about 40 ms).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass

from calogen.errors import CalogenError
from calogen.serve.service import InferenceService

__all__ = ["RunningServer", "check_ports", "start"]

log = logging.getLogger(__name__)


@dataclass
class RunningServer:
    """Handles of a started server; ``http_port`` and ``grpc_port`` are the bound ports."""

    service: InferenceService
    host: str
    http_port: int
    grpc_port: int
    _http: object
    _http_thread: threading.Thread
    _grpc: object

    def stop(self, *, grace_s: float | None = None, quiet_s: float = 0.5) -> None:
        """Report not ready, answer every request on its way, then stop accepting and close both front ends.

        Requests keep being served until none is unfinished and none has arrived for ``quiet_s``, so
        calls already sent when shutdown began are answered rather than cancelled; then both front
        ends stop accepting and finish what they hold. ``grace_s`` bounds the whole wait (default:
        the batcher's ``timeout_s`` plus 10 s, by when every queued request has run or timed out).
        """
        grace = _grace_s(self.service) if grace_s is None else grace_s
        deadline = time.monotonic() + grace
        self.service.begin_shutdown()
        while self.service.idle_s() < quiet_s and time.monotonic() < deadline:
            time.sleep(min(quiet_s, 0.05))
        remaining = max(deadline - time.monotonic(), 0.0)
        grpc_done = self._grpc.stop(remaining)  # type: ignore[attr-defined]
        self._http.should_exit = True  # type: ignore[attr-defined]
        grpc_done.wait()
        self._http_thread.join(max(deadline - time.monotonic(), 0.0))
        self.service.close(drain=True)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(service: InferenceService, *, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001, grpc_workers: int = 64) -> RunningServer:
    """Start serving ``service`` over KServe v2 HTTP and gRPC on ``host``; returns once both listen."""
    import uvicorn

    from calogen.serve.kserve_grpc import create_server
    from calogen.serve.kserve_http import create_app

    check_ports(http_port, grpc_port)
    sock = _listen(host, http_port)
    grpc_host = f"[{host}]" if ":" in host else host
    try:
        grpc_server, bound_grpc = create_server(service, f"{grpc_host}:{grpc_port}", max_workers=grpc_workers)
    except CalogenError:
        sock.close()
        raise
    config = uvicorn.Config(
        create_app(service), log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=round(_grace_s(service))
    )
    http = uvicorn.Server(config)
    thread = threading.Thread(target=http.run, kwargs={"sockets": [sock]}, name="calogen-http", daemon=True)
    thread.start()
    grpc_server.start()
    while not http.started:
        if not thread.is_alive():
            grpc_server.stop(0)
            raise CalogenError(f"the HTTP server on {host}:{http_port} failed to start; see the log above")
        time.sleep(0.01)
    port = sock.getsockname()[1]
    log.info("serving model %r: HTTP on %s:%d, gRPC on %s:%d", service.spec.name, host, port, host, bound_grpc)
    return RunningServer(service, host, port, bound_grpc, http, thread, grpc_server)


def check_ports(http_port: int, grpc_port: int) -> None:
    """Raise :class:`CalogenError` unless both ports lie in 0..65535 and differ (0 picks a free one)."""
    for option, port in (("--http-port", http_port), ("--grpc-port", grpc_port)):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise CalogenError(f"{option} must be a port number from 0 to 65535 (0 picks a free one), got {port!r}")
    if http_port == grpc_port != 0:
        raise CalogenError(f"HTTP and gRPC need different ports, both are {http_port}; change --http-port or --grpc-port")


def _grace_s(service: InferenceService) -> float:
    """How long shutdown may wait: the batcher's ``timeout_s`` plus 10 s, by when every queued request has run or timed out."""
    return service.batcher.config.timeout_s + 10


def _listen(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host:port`` whose connections get ``TCP_NODELAY`` from asyncio."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise CalogenError(f"cannot listen for HTTP on {host}:{port} ({exc.strerror or exc}); choose another --http-port or --host") from None
    return sock
