"""A small HTTP load generator for machines without wrk: keep-alive connections in threads.

``python -m bench.loadgen URL CONNECTIONS SECONDS TOKEN [NUMBERS_FROM NUMBERS_TO]`` prints one
JSON line: requests, seconds, rps, p50_ms, p99_ms, errors.
"""

from __future__ import annotations

import http.client
import json
import random
import sys
import threading
import time
from urllib.parse import urlsplit


def run(url: str, connections: int, seconds: float, token: str, span: tuple[int, int] | None) -> dict:
    parts = urlsplit(url)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        mine: list[float] = []
        bad = 0
        while time.monotonic() < stop_at:
            path = parts.path + ("?" + parts.query if parts.query else "")
            if span:
                path = f"{parts.path}?PhoneNumber=4144{random.randint(*span)}"
            started = time.perf_counter()
            try:
                conn.request("GET", path, headers={"X-Execution-Token": token})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    bad += 1
            except OSError:
                bad += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 15)
    elapsed = time.monotonic() - started
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0  # noqa: E731
    return {"requests": len(latencies), "seconds": round(elapsed, 2), "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(pick(0.5), 3), "p99_ms": round(pick(0.99), 3), "errors": errors[0]}


if __name__ == "__main__":
    args = sys.argv[1:]
    span = (int(args[4]), int(args[5])) if len(args) > 5 else None
    print(json.dumps(run(args[0], int(args[1]), float(args[2]), args[3], span)))
