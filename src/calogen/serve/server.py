"""Run the HTTP and gRPC front ends of one :class:`~calogen.serve.service.InferenceService`.

:func:`start` binds both (port 0 picks a free one), runs HTTP (uvicorn) in a thread and gRPC in its
own thread pool, and returns a :class:`RunningServer`; :meth:`RunningServer.stop` refuses new
requests, drains the batcher and closes both. The ``calogen serve`` command and the tests use it alike.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass

from calogen.errors import CalogenError
from calogen.serve.service import InferenceService

__all__ = ["RunningServer", "start"]

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

    def stop(self, *, grace_s: float = 5.0) -> None:
        """Refuse new requests, finish queued ones, then close both front ends."""
        self.service.close(drain=True)
        self._grpc.stop(grace_s).wait()  # type: ignore[attr-defined]
        self._http.should_exit = True  # type: ignore[attr-defined]
        self._http_thread.join(grace_s)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(service: InferenceService, *, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001, grpc_workers: int = 64) -> RunningServer:
    """Start serving ``service`` over KServe v2 HTTP and gRPC on ``host``; returns once both listen."""
    import uvicorn

    from calogen.serve.kserve_grpc import create_server
    from calogen.serve.kserve_http import create_app

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, http_port))
    except OSError as exc:
        sock.close()
        raise CalogenError(f"cannot bind HTTP to {host}:{http_port} ({exc.strerror}); choose another --http-port") from None
    grpc_host = f"[{host}]" if ":" in host else host
    grpc_server, bound_grpc = create_server(service, f"{grpc_host}:{grpc_port}", max_workers=grpc_workers)
    config = uvicorn.Config(create_app(service), log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=5)
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
