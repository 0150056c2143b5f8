"""Benchmark of ``calogen serve`` on loopback: latency, abusive requests, and a load test with every response checked.

Starts ``calogen serve`` as a subprocess on 127.0.0.1 (free ports), then runs three phases:

1. **latency**: one client sends ``--latency-requests`` batch-1 requests over HTTP and as many over
   gRPC, alternating, and reports the median of each (same server, same run).
2. **abuse** (``--abuse``): while ``--bystanders`` clients keep sending batch-1 requests, sends a
   1e9 MeV request, a gzip bomb (1 MB that inflates to 1 GB) and a 50 MB body, ``--abuse-rounds``
   times each, and reports the answers' status and time, the bystanders' latency and errors during the attacks, and the server's
   peak resident memory.
3. **load**: ``--clients`` threads each send ``--requests`` requests of 1 to ``--max-showers``
   showers (log-uniform energies, one seed per request) over gRPC or HTTP, then every checked request
   is recomputed with ``Generator.sample`` in this process: that both verifies the served showers and
   times the direct call. Prints throughput, latency percentiles, the executed batch-size histogram
   (from the server's ``/stats``), lost requests and the served/direct throughput ratio.

Usage:
    python benchmarks/bench_serve.py --engine gflash --geometry ds2 --abuse --requests 100
    python benchmarks/bench_serve.py --model-dir runs/tiny --clients 32 --requests 20
"""

from __future__ import annotations

import argparse
import contextlib
import http.client as httplib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Iterator

import numpy as np

NAME = "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def served(args: argparse.Namespace) -> Iterator[tuple[int, int, subprocess.Popen]]:  # type: ignore[type-arg]
    """``calogen serve`` in a subprocess, ready and warmed up; yields ``(http_port, grpc_port, process)``."""
    import tritonclient.http as httpclient

    ports = (free_port(), free_port())
    cmd = [sys.executable, "-m", "calogen.cli", "serve", "--name", NAME, "--http-port", str(ports[0]), "--grpc-port", str(ports[1])]
    cmd += ["--max-batch-size", str(args.max_batch_size), "--max-queue-delay-ms", str(args.max_queue_delay_ms), "--timeout-s", "600"]
    cmd += [args.model_dir] if args.model_dir else ["--engine", args.engine, "--geometry", args.geometry]
    cmd += ["--nfe", str(args.nfe)] if args.nfe else []
    server = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        probe = httpclient.InferenceServerClient(f"127.0.0.1:{ports[0]}")
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(Exception):
                if probe.is_server_ready():
                    break
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("server did not come up")
            time.sleep(0.2)
        inputs = [httpclient.InferInput("INCIDENT_ENERGY", [1, 1], "FP32")]  # warm up (numba, torch) outside the timings
        inputs[0].set_data_from_numpy(np.array([[np.sqrt(args.e_min * args.e_max)]], np.float32))
        probe.infer(NAME, inputs)
        probe.close()
        yield ports[0], ports[1], server
    finally:
        server.terminate()
        server.wait(120)


def batch1(protocol: str, port: int):  # type: ignore[no-untyped-def]
    """A client and a function sending one batch-1 request; returns ``(client, send)``."""
    if protocol == "grpc":
        import tritonclient.grpc as tc
    else:
        import tritonclient.http as tc  # type: ignore[no-redef]
    client = tc.InferenceServerClient(f"127.0.0.1:{port}")
    inputs = [tc.InferInput("INCIDENT_ENERGY", [1, 1], "FP32")]
    inputs[0].set_data_from_numpy(np.array([[1e4]], np.float32))
    return client, lambda: client.infer(NAME, inputs)


def latency_phase(args: argparse.Namespace, http_port: int, grpc_port: int) -> None:
    """Alternating batch-1 requests over HTTP and gRPC from one client: median latency of each."""
    clients = {"http": batch1("http", http_port), "grpc": batch1("grpc", grpc_port)}
    times: dict[str, list[float]] = {"http": [], "grpc": []}
    for _ in range(args.latency_requests):
        for protocol, (_, send) in clients.items():
            start = time.perf_counter()
            send()
            times[protocol].append(time.perf_counter() - start)
    for client, _ in clients.values():
        client.close()
    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    print(f"\n== batch-1 latency, {args.latency_requests} requests each, alternating (max_queue_delay_ms {args.max_queue_delay_ms:g})")
    for k, v in times.items():
        print(f"{k}: median {med[k]:.2f} ms, p10 {np.percentile(v, 10) * 1e3:.2f} ms, p90 {np.percentile(v, 90) * 1e3:.2f} ms")
    print(f"HTTP - gRPC median: {med['http'] - med['grpc']:+.2f} ms")


def _post(port: int, body: bytes, headers: dict[str, str]) -> tuple[str, float, str]:
    """POST an infer body; returns ``(status, seconds, start of the answer)``."""
    conn = httplib.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    try:
        conn.request("POST", f"/v2/models/{NAME}/infer", body=body, headers=headers)
        response = conn.getresponse()
        status, text = str(response.status), response.read()[:110].decode(errors="replace")
    except OSError as exc:
        status, text = "connection error", str(exc)
    finally:
        conn.close()
    return status, time.perf_counter() - start, text


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM"))


def abuse_phase(args: argparse.Namespace, http_port: int, grpc_port: int, server: subprocess.Popen) -> bool:  # type: ignore[type-arg]
    """Abusive requests while bystanders keep sending; returns True when each is refused with 4xx and no bystander failed."""
    energy = json.dumps({"inputs": [{"name": "INCIDENT_ENERGY", "datatype": "FP32", "shape": [1, 1], "data": [1e9]}]}).encode()
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    bomb = b"".join(deflate.compress(block) for _ in range(1024)) + deflate.flush()
    big = b'{"inputs": [], "pad": "' + b"x" * 50_000_000 + b'"}'
    attacks = [
        ("energy 1e9 MeV", energy, {"Content-Type": "application/json"}),
        (f"gzip bomb {len(bomb) / 1e6:.1f} MB -> 1 GB", bomb, {"Content-Encoding": "gzip"}),
        ("50 MB body", big, {"Content-Type": "application/json"}),
    ]
    stop, lock = threading.Event(), threading.Lock()
    log: list[tuple[float, float, bool]] = []  # (start, seconds, ok) of bystander requests

    def bystander(protocol: str) -> None:
        client, send = batch1(protocol, http_port if protocol == "http" else grpc_port)
        while not stop.is_set():
            start = time.perf_counter()
            try:
                send()
                ok = True
            except Exception:
                ok = False
            with lock:
                log.append((start, time.perf_counter() - start, ok))
        client.close()

    threads = [threading.Thread(target=bystander, args=("http" if k % 2 else "grpc",)) for k in range(args.bystanders)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    calm_until = time.perf_counter()
    results = [(name, *_post(http_port, body, headers)) for _ in range(args.abuse_rounds) for name, body, headers in attacks]
    attacks_end = time.perf_counter()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()

    def summary(rows: list[tuple[float, float, bool]]) -> str:
        lat = np.asarray([s for _, s, ok in rows if ok]) * 1e3
        failed = sum(not ok for *_, ok in rows)
        return f"{lat.size} answered, {failed} failed, median {np.median(lat):.1f} ms, max {lat.max():.1f} ms" if lat.size else f"{failed} failed"

    during = [r for r in log if calm_until <= r[0] <= attacks_end]
    print(f"\n== abusive requests, {args.abuse_rounds} rounds, {args.bystanders} bystander clients (half HTTP, half gRPC) sending batch-1 requests")
    for name, *_ in attacks:
        rows = [r for r in results if r[0] == name]
        statuses = ", ".join(f"{k} x{v}" for k, v in Counter(status for _, status, _, _ in rows).items())
        seconds = [s for _, _, s, _ in rows]
        print(f"{name:28s} -> {statuses}, median {np.median(seconds):.3f} s, max {max(seconds):.3f} s: {rows[0][3]}")
    print(f"bystanders before the attacks: {summary([r for r in log if r[0] < calm_until])}")
    print(f"bystanders during the attacks ({attacks_end - calm_until:.2f} s): {summary(during)}")
    print(f"server peak resident memory: {_peak_rss_mb(server.pid):.0f} MB")
    refused = all(status.startswith("4") for _, status, _, _ in results)
    return refused and all(ok for *_, ok in log)


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
            showers = client.infer(NAME, inputs, outputs=[tc.InferRequestedOutput("SHOWERS")]).as_numpy("SHOWERS")
        except Exception as exc:  # a lost request is a result of the benchmark, not a crash
            errors.append(f"client {k} request {j}: {exc}")
            continue
        latencies.append(time.perf_counter() - start)
        results[k][j] = showers
    client.close()


def load_phase(args: argparse.Namespace, http_port: int, grpc_port: int) -> tuple[list, list[list], list[float], list[str], float, dict, dict]:  # type: ignore[type-arg]
    """Run the concurrent clients; returns the plan, results, latencies, errors, wall time and the stats before and after."""
    stats_url = f"http://127.0.0.1:{http_port}/stats"
    work = plan(args)
    base_stats = json.loads(urllib.request.urlopen(stats_url).read())
    results: list[list[np.ndarray | None]] = [[None] * args.requests for _ in range(args.clients)]
    latencies: list[float] = []
    errors: list[str] = []
    ports = (http_port, grpc_port)
    threads = [threading.Thread(target=client_loop, args=(k, args, ports, work[k], results, latencies, errors)) for k in range(args.clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    served_s = time.perf_counter() - start
    stats = json.loads(urllib.request.urlopen(stats_url).read())
    return work, results, latencies, errors, served_s, base_stats, stats


def report_load(args, generator, sample_kw, work, results, latencies, errors, served_s, base_stats, stats) -> bool:  # type: ignore[no-untyped-def]
    """Check a share of the requests against ``Generator.sample``, print the load test; True when nothing was lost or wrong."""
    n_requests = args.clients * args.requests
    n_showers = sum(e.size for client in work for e, _ in client)
    hist = Counter({int(k): v for k, v in stats["batch_size_histogram"].items()})
    hist.subtract({int(k): v for k, v in base_stats["batch_size_histogram"].items()})
    batches = sum(hist.values())
    executed = sum(k * v for k, v in hist.items())

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
    print(f"\n== load test: {source_name}, {args.protocol}, {args.clients} clients x {args.requests} requests of 1-{args.max_showers} showers")
    print(f"requests {n_requests}, showers {n_showers}, lost {lost}, errors {len(errors)}")
    for line in errors[:5]:
        print("  ", line)
    print(f"checked {len(chosen)} requests against Generator.sample: {exact} bit-identical, {wrong} wrong (rel. diff > 1e-5), worst rel. diff {worst:.2e}")
    print(f"served: {served_s:.1f} s, {n_requests / served_s:.1f} requests/s, {served_rate:.1f} showers/s")
    print(f"latency ms: p50 {np.percentile(lat, 50):.1f}, p90 {np.percentile(lat, 90):.1f}, p99 {np.percentile(lat, 99):.1f}")
    print(f"executed batches {batches}, mean batch size {executed / max(batches, 1):.2f} showers ({n_requests / max(batches, 1):.2f} requests)")
    print("batch-size histogram (showers: batches): " + ", ".join(f"{k}: {v}" for k, v in sorted(hist.items()) if v))
    print(f"direct Generator.sample: {direct_rate:.1f} showers/s on {direct_showers} showers; served / direct = {served_rate / direct_rate:.2f}")
    return lost == 0 and not errors and wrong == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", help="serve this trained model")
    parser.add_argument("--engine", help="serve this simulation engine (gflash)")
    parser.add_argument("--geometry", default="ds2", help="geometry of --engine (default ds2)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=200, help="requests per client in the load test (0: skip it)")
    parser.add_argument("--max-showers", type=int, default=16, help="showers per request: uniform in 1..max")
    parser.add_argument("--e-min", type=float, default=1e3, help="MeV")
    parser.add_argument("--e-max", type=float, default=1e5, help="MeV")
    parser.add_argument("--protocol", choices=["grpc", "http", "both"], default="both")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-ms", type=float, default=5.0)
    parser.add_argument("--nfe", type=int, help="NFE of a model")
    parser.add_argument("--latency-requests", type=int, default=300, help="batch-1 requests per protocol in the latency phase (0: skip)")
    parser.add_argument("--abuse", action="store_true", help="run the abusive-request phase")
    parser.add_argument("--bystanders", type=int, default=4, help="clients kept busy during the abusive requests")
    parser.add_argument("--abuse-rounds", type=int, default=10, help="times each abusive request is sent")
    parser.add_argument("--verify-fraction", type=float, default=1.0, help="share of requests recomputed directly (check + baseline)")
    parser.add_argument("--plan-seed", type=int, default=1234)
    args = parser.parse_args()
    if (args.model_dir is None) == (args.engine is None):
        parser.error("give exactly one of --model-dir and --engine")

    from calogen.serve.service import InferenceService

    source = InferenceService.from_source(args.model_dir, engine=args.engine, geometry=args.geometry, nfe=args.nfe)
    generator, sample_kw = source.generator, ({"nfe": args.nfe} if args.nfe else {})
    source.close()

    ok = True
    with served(args) as (http_port, grpc_port, server):
        if args.latency_requests:
            latency_phase(args, http_port, grpc_port)
        if args.abuse:
            ok &= abuse_phase(args, http_port, grpc_port, server)
        load = load_phase(args, http_port, grpc_port) if args.requests else None
    if load is not None:
        ok &= report_load(args, generator, sample_kw, *load)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
