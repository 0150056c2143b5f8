"""``calogen serve``: serve a model directory or a simulation engine over the KServe v2 protocol (HTTP and gRPC)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from calogen.commands._types import positive_int, seed_int

NAME = "serve"
HELP = "serve a trained model or a simulation engine over KServe v2 / Triton HTTP and gRPC"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``calogen serve``."""
    parser.add_argument("model_dir", nargs="?", metavar="MODEL_DIR", help="trained model directory (or use --engine)")
    parser.add_argument("--engine", choices=["gflash", "full"], help="serve a simulation engine instead of a model")
    parser.add_argument("--geometry", help="geometry of --engine: a built-in name (ds2, tiny, ...) or a binning XML")
    parser.add_argument("--particle", default="e-", help="particle of --engine (default: e-)")
    parser.add_argument("--name", help="model name clients use (default: the directory name or the engine)")
    parser.add_argument("--nfe", type=int, help="network evaluations per sample of a few-step model (default: the model's)")
    parser.add_argument("--exact", action="store_true", help="run a model once per request: bit-identical to sample(), no merged passes")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP port (default: 8000)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default: 8001)")
    parser.add_argument("--max-batch-size", type=int, default=64, help="most showers per batch and per request (default: 64)")
    parser.add_argument("--max-queue-delay-ms", type=float, default=5.0, help="wait for more requests to fill a batch (default: 5 ms)")
    parser.add_argument("--max-queue-size", type=int, default=1024, help="waiting requests before refusing with 503 (default: 1024)")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="fail requests queued longer than this (default: 60 s)")
    parser.add_argument("--seed", type=seed_int, default=0, help="server seed for requests that bring none (default: 0)")
    parser.add_argument(
        "--energy-range", metavar="MIN:MAX",
        help="incident energies served, e.g. 1GeV:1TeV (default: a model's training range; 1MeV:1TeV for --engine)",
    )  # fmt: skip
    parser.add_argument("--max-body-bytes", type=positive_int, default=1 << 20, help="largest request as sent, HTTP body or gRPC message (default: 1 MiB)")
    parser.add_argument("--max-inflated-bytes", type=positive_int, default=4 << 20, help="largest HTTP body after gzip/deflate decoding (default: 4 MiB)")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM, then answer the requests already received and stop."""
    from calogen.energies import format_energy
    from calogen.serve.batching import BatchingConfig
    from calogen.serve.limits import RequestLimits, parse_energy_range
    from calogen.serve.server import check_ports, start
    from calogen.serve.service import InferenceService

    check_ports(args.http_port, args.grpc_port)

    batching = BatchingConfig(
        max_batch_size=args.max_batch_size, max_queue_delay_ms=args.max_queue_delay_ms,
        max_queue_size=args.max_queue_size, timeout_s=args.timeout_s,
    )  # fmt: skip
    limits = RequestLimits(
        energy_range=parse_energy_range(args.energy_range) if args.energy_range else None,
        max_body_bytes=args.max_body_bytes, max_inflated_bytes=args.max_inflated_bytes,
    )  # fmt: skip
    service = InferenceService.from_source(
        args.model_dir, engine=args.engine, geometry=args.geometry, particle=args.particle, nfe=args.nfe, exact=args.exact,
        name=args.name, batching=batching, seed=args.seed, limits=limits,
    )  # fmt: skip
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        server = start(service, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port)
    except BaseException:
        service.close(drain=False)
        raise
    low, high = service.spec.energy_range
    print(
        f"serving {service.spec.name!r} on http://{args.host}:{server.http_port} and grpc {args.host}:{server.grpc_port} "
        f"(energies {format_energy(low)} to {format_energy(high)})",
        flush=True,
    )
    try:
        while not stop.wait(30):
            log.info("stats: %s", service.batcher.stats.snapshot())
    except KeyboardInterrupt:
        pass
    log.info("shutting down: answering the requests already received")
    server.stop()
    log.info("final stats: %s", service.batcher.stats.snapshot())
    return 0
