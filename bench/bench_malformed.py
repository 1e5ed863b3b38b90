"""Malformed and slow requests against a real gunicorn, next to a normal lookup in the same run.

Starts the service as the Procfile does (one worker with two threads, so that a blocked thread
shows) and prints, each against the normal lookup measured in the same run:

* the answer time of a lookup whose phoneNumber is 65,000 spaces (a 400 at once), of JSON nested
  10,000 levels deep (a 400), and of a request line gunicorn refuses (a JSON 414);
* lookups while 20 clients send their request one byte a second and 200 kept-alive connections
  sit idle, with this worker and with gunicorn's stock gthread worker;
* the throughput of normal lookups on 16 kept-alive connections (bench/loadgen.py in a second
  process) with both workers, Procfile settings (2 workers x 8 threads): what reading requests in
  the main loop costs when every client is fast.

    python -m bench.bench_malformed [--slow-seconds 12] [--load-seconds 8]

Figures are printed, never asserted (the machine is shared: expect noise). Traffic goes to
127.0.0.1 only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import latency_figures, print_row, time_calls  # noqa: E402
from tests.live_gunicorn import LiveGunicorn  # noqa: E402

TOKEN = "bench-token-0123456789"
LOOKUP = "/Lookup?PhoneNumber=41215522000"


def _start(folder: Path, extra_args: tuple[str, ...] = ()) -> LiveGunicorn:
    env = {"LOOKUP_TOKENS": TOKEN, "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "2", "LOOKUP_ACCESS_LOG": "0"}
    return LiveGunicorn(folder, env, extra_args).start()


def _timed_requests(server: LiveGunicorn, method: str, path: str, body: bytes | None, count: int) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"X-Execution-Token": TOKEN, "Content-Type": "application/json"}
    statuses: set[int] = set()

    def call(_: int) -> None:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        statuses.add(response.status)

    try:
        samples = time_calls(call, count, max_seconds=60)
    finally:
        connection.close()
    print(f"  ({method} {path[:30]}: statuses {sorted(statuses)})", flush=True)
    return samples


def _raw_timed(server: LiveGunicorn, raw: bytes, count: int) -> list[float]:
    return time_calls(lambda _: server.raw(raw), count, max_seconds=60)


def answer_times(folder: Path) -> None:
    server = _start(folder)
    try:
        normal = latency_figures(_timed_requests(server, "GET", LOOKUP, None, 300))
        spaces = b'{"inputs": {"phoneNumber": "' + b" " * 65_000 + b'"}}'
        figures = {
            "normal lookup (reference)": normal,
            "phoneNumber of 65,000 spaces": latency_figures(_timed_requests(server, "POST", "/Lookup", spaces, 100)),
            "JSON nested 10,000 deep": latency_figures(
                _timed_requests(server, "POST", "/Lookup", b"[" * 10_000 + b"]" * 10_000, 100)),
            "request line of 5 KB (JSON 414)": latency_figures(
                _raw_timed(server, b"GET /Lookup?PhoneNumber=" + b"4" * 5000 + b" HTTP/1.1\r\n\r\n", 100)),
        }
    finally:
        server.stop()
    for label, row in figures.items():
        ratio = row["p50_ms"] / normal["p50_ms"] if normal["p50_ms"] else 0
        print_row(label, {**row, "p50_vs_normal": round(ratio, 2)})


def under_slow_clients(folder: Path, label: str, extra_args: tuple[str, ...], seconds: float) -> None:
    server = _start(folder, extra_args)
    stop = threading.Event()
    request = f"GET {LOOKUP} HTTP/1.1\r\nHost: bench\r\nX-Execution-Token: {TOKEN}\r\n\r\n".encode()

    def slow_client() -> None:
        stop_at = time.monotonic() + seconds + 5
        while not stop.is_set() and time.monotonic() < stop_at:  # reconnects when the server gives up
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                    for byte in request:
                        sock.send(bytes([byte]))
                        if stop.wait(1.0):
                            return
            except OSError:
                stop.wait(0.2)

    idle: list[http.client.HTTPConnection] = []
    samples: list[float] = []
    failures = 0
    threads = [threading.Thread(target=slow_client, daemon=True) for _ in range(20)]
    try:
        for _ in range(200):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            try:
                connection.request("GET", "/healthz")
                connection.getresponse().read()
            except OSError:
                failures += 1
            idle.append(connection)
        for thread in threads:
            thread.start()
        time.sleep(2)
        stop_at = time.monotonic() + seconds
        while time.monotonic() < stop_at:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            started = time.perf_counter()
            try:
                connection.request("GET", LOOKUP, headers={"X-Execution-Token": TOKEN})
                connection.getresponse().read()
                samples.append(time.perf_counter() - started)
            except OSError:
                failures += 1
            finally:
                connection.close()
            time.sleep(0.05)
    finally:
        stop.set()
        for connection in idle:
            connection.close()
        server.stop()
    row = latency_figures(samples)
    row["max_ms"] = round(max(samples) * 1000, 1) if samples else 0.0
    print_row(label, {**row, "failed_or_timed_out_10s": failures})


def throughput(folder: Path, label: str, extra_args: tuple[str, ...], seconds: float) -> None:
    env = {"LOOKUP_TOKENS": TOKEN, "WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "8", "LOOKUP_ACCESS_LOG": "0"}
    server = LiveGunicorn(folder, env, extra_args).start()
    try:
        url = f"http://127.0.0.1:{server.port}{LOOKUP}"
        command = [sys.executable, "-m", "bench.loadgen", url, "16", str(seconds), TOKEN]
        output = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60, check=True)
        figures = json.loads(output.stdout.strip().splitlines()[-1])
    finally:
        server.stop()
    print_row(label, {k: figures[k] for k in ("rps", "p50_ms", "p99_ms", "errors") if k in figures})


def _folder(root: str, name: str) -> Path:
    folder = Path(root) / name
    folder.mkdir()
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slow-seconds", type=float, default=12.0)
    parser.add_argument("--load-seconds", type=float, default=8.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print("answer times (1 worker x 2 threads, keep-alive connection):", flush=True)
        answer_times(_folder(folder, "a"))
        print("lookups while 20 clients send a byte a second and 200 connections idle:", flush=True)
        under_slow_clients(_folder(folder, "b"), "this worker (BalancedThreadWorker)", (), args.slow_seconds)
        under_slow_clients(_folder(folder, "c"), "gunicorn's stock gthread worker", ("--worker-class", "gthread"),
                           args.slow_seconds)
        print("throughput, 16 kept-alive connections, normal lookups (2 workers x 8 threads):", flush=True)
        throughput(_folder(folder, "d"), "this worker (BalancedThreadWorker)", (), args.load_seconds)
        throughput(_folder(folder, "e"), "gunicorn's stock gthread worker", ("--worker-class", "gthread"),
                   args.load_seconds)


if __name__ == "__main__":
    main()
