"""Uncached lookups under each garbage-collector set-up, against the bare Flask app, in one run.

Starts the bare Flask app and one service per variant of bench/gc_variants.py (defaults, off,
freeze, service), all with the answer cache off, and drives them in alternating rounds with random
numbers of a directory of N contacts; prints for each the medians and the round-by-round ratios to
the bare app (throughput, p99, CPU time per request), as bench_service does.

    python -m bench.bench_gc [--contacts 1000000] [--rounds 4] [--duration 5]

Figures are printed, never asserted. Traffic goes to 127.0.0.1 only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.bench_service import FIRST, TOKEN, Server, load, measure_command, measure_import, measured_load, median_row  # noqa: E402
from bench.make_contacts import write as write_contacts  # noqa: E402

VARIANTS = ("defaults", "off", "freeze", "service")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="lookup-bench-gc-")
    directory = os.path.join(work, "directory.sqlite3")
    env = {"LOOKUP_TOKENS": TOKEN, "LOOKUP_DIRECTORY": directory, "LOOKUP_STATE_DB": os.path.join(work, "state.db"),
           "LOOKUP_INSTANCE_DIR": os.path.join(work, "instance"),
           "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY", "2")}
    try:
        csv_path = os.path.join(work, "contacts.csv")
        write_contacts(csv_path, args.contacts)
        measure_import(csv_path, env)
        os.unlink(csv_path)
        measure_command(["directory", "index"], env)
        uncached = {"LOOKUP_CACHE_TTL": "0", "LOOKUP_NEGATIVE_CACHE_TTL": "0"}
        scenarios = [("bare Flask app", "bench.bare_flask:app", {})]
        scenarios += [(f"service, uncached, gc {v}", "bench.gc_variants:app", {**uncached, "GC_VARIANT": v})
                      for v in VARIANTS]
        logs = os.path.join(work, "servers.log")
        servers = [Server(target, {**env, **extra}, logs) for _, target, extra in scenarios]
        path = f"/Lookup?PhoneNumber=4144{FIRST}"
        samples: dict[str, list[dict]] = {label: [] for label, *_ in scenarios}
        try:
            for server in servers:
                load(server.url, path, 2, args.connections, TOKEN, args.contacts)  # warm-up
            for _round in range(args.rounds):
                for (label, *_), server in zip(scenarios, servers, strict=True):
                    samples[label].append(measured_load(server, path, args.duration, args.connections, TOKEN,
                                                        args.contacts))
        finally:
            for server in servers:
                server.stop()
        print(f"(medians of {args.rounds} alternating rounds of {args.duration:.0f}s, {args.contacts} contacts)")
        for label, runs in samples.items():
            median_row(label, runs, samples["bare Flask app"])
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
