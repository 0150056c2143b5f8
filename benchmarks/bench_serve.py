"""Load test of ``calogen serve``: many concurrent Triton clients on loopback, every response checked.

Starts ``calogen serve`` as a subprocess on 127.0.0.1 (free ports), runs ``--clients`` threads that
each send ``--requests`` requests of 1 to ``--max-showers`` showers (log-uniform energies, one seed per
request) over gRPC or HTTP, then recomputes every checked request with ``Generator.sample`` in this
process: that both verifies the served showers and times the direct call. Prints throughput,
latency percentiles, the executed batch-size histogram (from the server's ``/stats``) and the
served/direct throughput ratio.

Usage:
    python benchmarks/bench_serve.py --engine gflash --geometry ds2
    python benchmarks/bench_serve.py --model-dir runs/tiny --clients 32 --requests 20
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter

import numpy as np


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def plan(args: argparse.Namespace) -> list[list[tuple[np.ndarray, int]]]:
    """Per client, its requests as ``(energies (n,) MeV, seed)``."""
    rng = np.random.default_rng(args.plan_seed)
    lo, hi = np.log(args.e_min), np.log(args.e_max)
    return [
        [
            (np.exp(rng.uniform(lo, hi, int(rng.integers(1, args.max_showers + 1)))).astype(np.float32), int(rng.integers(0, 2**62)))
            for _ in range(args.requests)
        ]
        for _ in range(args.clients)
    ]


def client_loop(k: int, args: argparse.Namespace, ports: tuple[int, int], requests, results: list, latencies: list, errors: list) -> None:  # type: ignore[no-untyped-def]
    use_grpc = args.protocol == "grpc" or (args.protocol == "both" and k % 2 == 0)
    if use_grpc:
        import tritonclient.grpc as tc

        client = tc.InferenceServerClient(f"127.0.0.1:{ports[1]}")
    else:
        import tritonclient.http as tc  # type: ignore[no-redef]

        client = tc.InferenceServerClient(f"127.0.0.1:{ports[0]}", network_timeout=600, connection_timeout=600)
    for j, (energies, seed) in enumerate(requests):
        e = energies.reshape(-1, 1)
        inputs = [tc.InferInput("INCIDENT_ENERGY", list(e.shape), "FP32"), tc.InferInput("SEED", [1], "INT64")]
        inputs[0].set_data_from_numpy(e)
        inputs[1].set_data_from_numpy(np.array([seed], np.int64))
        start = time.perf_counter()
        try:
            showers = client.infer(args.name, inputs, outputs=[tc.InferRequestedOutput("SHOWERS")]).as_numpy("SHOWERS")
        except Exception as exc:  # a lost request is a result of the benchmark, not a crash
            errors.append(f"client {k} request {j}: {exc}")
            continue
        latencies.append(time.perf_counter() - start)
        results[k][j] = showers
    client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", help="serve this trained model")
    parser.add_argument("--engine", help="serve this simulation engine (gflash)")
    parser.add_argument("--geometry", default="ds2", help="geometry of --engine (default ds2)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=200, help="requests per client")
    parser.add_argument("--max-showers", type=int, default=16, help="showers per request: uniform in 1..max")
    parser.add_argument("--e-min", type=float, default=1e3, help="MeV")
    parser.add_argument("--e-max", type=float, default=1e5, help="MeV")
    parser.add_argument("--protocol", choices=["grpc", "http", "both"], default="both")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-ms", type=float, default=5.0)
    parser.add_argument("--nfe", type=int, help="NFE of a model")
    parser.add_argument("--verify-fraction", type=float, default=1.0, help="share of requests recomputed directly (check + baseline)")
    parser.add_argument("--plan-seed", type=int, default=1234)
    args = parser.parse_args()
    if (args.model_dir is None) == (args.engine is None):
        parser.error("give exactly one of --model-dir and --engine")
    args.name = "bench"

    from calogen.serve.service import InferenceService

    source = InferenceService.from_source(args.model_dir, engine=args.engine, geometry=args.geometry, nfe=args.nfe)
    generator, sample_kw = source.generator, ({"nfe": args.nfe} if args.nfe else {})
    source.close()

    ports = (free_port(), free_port())
    cmd = [sys.executable, "-m", "calogen.cli", "serve", "--name", args.name, "--http-port", str(ports[0]), "--grpc-port", str(ports[1])]
    cmd += ["--max-batch-size", str(args.max_batch_size), "--max-queue-delay-ms", str(args.max_queue_delay_ms), "--timeout-s", "600"]
    cmd += [args.model_dir] if args.model_dir else ["--engine", args.engine, "--geometry", args.geometry]
    cmd += ["--nfe", str(args.nfe)] if args.nfe else []
    server = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        import tritonclient.http as httpclient

        probe = httpclient.InferenceServerClient(f"127.0.0.1:{ports[0]}")
        deadline = time.monotonic() + 120
        while True:
            try:
                if probe.is_server_ready():
                    break
            except Exception:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("server did not come up")
            time.sleep(0.2)
        work = plan(args)
        # warm up (numba compilation, torch first call) outside the timed run
        warm = work[0][0]
        inputs = [httpclient.InferInput("INCIDENT_ENERGY", [warm[0].size, 1], "FP32")]
        inputs[0].set_data_from_numpy(warm[0].reshape(-1, 1))
        probe.infer(args.name, inputs)
        base_stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/stats").read())

        results: list[list[np.ndarray | None]] = [[None] * args.requests for _ in range(args.clients)]
        latencies: list[float] = []
        errors: list[str] = []
        threads = [threading.Thread(target=client_loop, args=(k, args, ports, work[k], results, latencies, errors)) for k in range(args.clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        served_s = time.perf_counter() - start
        stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/stats").read())
        probe.close()
    finally:
        server.terminate()
        server.wait(60)

    n_requests = args.clients * args.requests
    n_showers = sum(e.size for client in work for e, _ in client)
    hist = Counter({int(k): v for k, v in stats["batch_size_histogram"].items()})
    hist.subtract({int(k): v for k, v in base_stats["batch_size_histogram"].items()})
    batches = sum(hist.values())
    executed = sum(k * v for k, v in hist.items())

    # direct Generator.sample on a share of the requests: correctness and the baseline throughput
    rng = np.random.default_rng(0)
    chosen = [(k, j) for k in range(args.clients) for j in range(args.requests) if rng.random() < args.verify_fraction]
    wrong, exact, worst, direct_showers, direct_s = 0, 0, 0.0, 0, 0.0
    for k, j in chosen:
        energies, seed = work[k][j]
        t0 = time.perf_counter()
        want = generator.sample(energies, seed=seed, **sample_kw)
        direct_s += time.perf_counter() - t0
        direct_showers += energies.size
        got = results[k][j]
        if got is None:
            continue
        if got.shape != want.shape:
            wrong += 1
            continue
        rel = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
        exact += bool(np.array_equal(got, want))
        worst = max(worst, rel)
        wrong += rel > 1e-5

    lost = sum(r is None for client in results for r in client)
    lat = np.asarray(latencies) * 1e3
    served_rate, direct_rate = n_showers / served_s, direct_showers / max(direct_s, 1e-12)
    source_name = args.model_dir or f"{args.engine} on {args.geometry}"
    print(f"\n== calogen serve load test: {source_name}, {args.protocol}, {args.clients} clients x {args.requests} requests of 1-{args.max_showers} showers")
    print(f"requests {n_requests}, showers {n_showers}, lost {lost}, errors {len(errors)}")
    for line in errors[:5]:
        print("  ", line)
    print(f"checked {len(chosen)} requests against Generator.sample: {exact} bit-identical, {wrong} wrong (rel. diff > 1e-5), worst rel. diff {worst:.2e}")
    print(f"served: {served_s:.1f} s, {n_requests / served_s:.1f} requests/s, {served_rate:.1f} showers/s")
    print(f"latency ms: p50 {np.percentile(lat, 50):.1f}, p90 {np.percentile(lat, 90):.1f}, p99 {np.percentile(lat, 99):.1f}")
    print(f"executed batches {batches}, mean batch size {executed / max(batches, 1):.2f} showers ({n_requests / max(batches, 1):.2f} requests)")
    print("batch-size histogram (showers: batches): " + ", ".join(f"{k}: {v}" for k, v in sorted(hist.items()) if v))
    print(f"direct Generator.sample: {direct_rate:.1f} showers/s on {direct_showers} showers; served / direct = {served_rate / direct_rate:.2f}")
    return 0 if lost == 0 and not errors and wrong == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
