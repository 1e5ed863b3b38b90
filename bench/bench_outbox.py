"""A CRM outage against the real service: 50 CallFlows during a 10-second outage (503, then hanging),
then recovery. Prints how long each post took against the workflow deadline, and how long after the
recovery every call was recorded, and whether any was recorded twice.

    .venv/bin/python -m bench.bench_outbox [--calls 50] [--outage 10]

The service is the Procfile's gunicorn (2 workers, default settings: 4 s workflow deadline, 30 s
breaker cooldown, 2 s first backoff) with a REST backend against tests/fakes/rest_api.py on
127.0.0.1. The machine's load makes the figures noisy; the ratio to the deadline is what matters.
"""

from __future__ import annotations

import argparse
import collections
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.fakes.rest_api import FakeRestApi, Reply
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789"
CONFIG = """
[[tenant]]
name = "acme"
tokens = ["{token}"]
  [[tenant.backend]]
  name = "erp"
  type = "rest"
  lookup_url = "{api}/api/contacts?phone={{e164}}"
  workflows = ["CallFlow"]
    [tenant.backend.fields]
    id = "id"
    name = "name"
    phones = "phones"
    [tenant.backend.call_log]
    request_url = "{api}/api/calls"
    body = '{{"contact": "{{contact_id}}", "key": "{{call_key}}"}}'
    id = "id"
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--outage", type=float, default=10.0)
    args = parser.parse_args()

    state = {"phase": "down"}
    recorded: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def handle(request):
        if state["phase"] == "up":
            key = request.json()["key"]
            with lock:
                recorded[key] += 1
            return Reply(201, {"id": f"erp-{key[:8]}"})
        if state["phase"] == "hang":
            return Reply(503, {"error": "late"}, delay=5.0)
        return Reply(503, {"error": "maintenance"})

    api = FakeRestApi().start()
    api.route("POST", "/api/calls", handle)
    work = Path(tempfile.mkdtemp(prefix="bench-outbox-"))
    (work / "lookup.toml").write_text(CONFIG.format(token=TOKEN, api=api.url))
    port = free_port()
    line = next(x for x in (ROOT / "Procfile").read_text().splitlines() if x.startswith("web:"))
    command = shlex.split(line[4:])
    command[0] = str(Path(sys.executable).parent / "gunicorn")
    env = {**os.environ, "PORT": str(port), "WEB_CONCURRENCY": "2", "LOOKUP_CONFIG": str(work / "lookup.toml"),
           "LOOKUP_STATE_DB": str(work / "state.sqlite3"), "LOOKUP_INSTANCE_DIR": str(work),
           "LOOKUP_ACCESS_LOG": "0", "LOOKUP_STARTUP_CHECK": "off"}
    log = open(work / "gunicorn.log", "ab")  # noqa: SIM115 - closed right after the start
    process = subprocess.Popen(command + ["--bind", f"127.0.0.1:{port}"], cwd=ROOT, env=env, stdout=log,
                               stderr=log, start_new_session=True)
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit("the service did not start: " + (work / "gunicorn.log").read_text()[-2000:])
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        latencies: list[float] = []
        statuses: collections.Counter[int] = collections.Counter()

        def post(i: int) -> None:
            body = {"inputs": {"contactCrmId": "erp:C1", "direction": "incoming",
                               "startedTime": str(1795251600 + i * 60)}}
            started = time.perf_counter()
            response = requests.post(url + "/CallFlow", json=body, headers={"X-Execution-Token": TOKEN}, timeout=30)
            latencies.append(time.perf_counter() - started)
            statuses[response.status_code] += 1

        outage_started = time.monotonic()
        futures = []
        with ThreadPoolExecutor(8) as pool:
            for i in range(args.calls):  # spread over the outage
                if time.monotonic() - outage_started > args.outage / 2:
                    state["phase"] = "hang"
                futures.append(pool.submit(post, i))
                time.sleep(args.outage / args.calls)
        for future in futures:
            future.result()  # a failed post is the benchmark's failure
        while time.monotonic() - outage_started < args.outage:
            time.sleep(0.05)
        state["phase"] = "up"
        recovered = time.monotonic()
        while len(recorded) < args.calls and time.monotonic() - recovered < 120:
            time.sleep(0.1)
        all_recorded = time.monotonic() - recovered
        latencies.sort()
        print(f"posts during the outage: {len(latencies)}, statuses {dict(statuses)}")
        print(f"answer time: median {latencies[len(latencies) // 2] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
              f" (workflow deadline 4000 ms; max/deadline {latencies[-1] / 4.0:.2f})")
        print(f"recorded after recovery: {len(recorded)} of {args.calls} within {all_recorded:.1f} s; "
              f"recorded twice: {sum(1 for c in recorded.values() if c > 1)}")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
        api.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
